package plugins

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
)

// w3c is the W3C Trace Context propagator (traceparent, tracestate). It is
// used directly rather than through otel's global propagator: the host
// keeps no global state, and W3C is what the rest of Troupe carries.
var w3c = propagation.TraceContext{}

// injectTrace sets the W3C trace context of ctx on an ambassador's
// outbound request, so that the partner's server span is a child of the
// call: with a tracer, ctx holds the troupe.plugin.ambassador span (Call);
// without one, whatever span context the caller's ctx carries. It
// overrides a traceparent the guest set, as an instrumented HTTP client
// does, and leaves the guest's headers alone when ctx has no valid span
// context (nothing to inject).
func injectTrace(ctx context.Context, h http.Header) {
	w3c.Inject(ctx, propagation.HeaderCarrier(h))
}
