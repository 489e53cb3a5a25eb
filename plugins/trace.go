package plugins

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Tracing (docs/adr/0016-tracing.md): with Config.Tracer set, every
// sidecar call is one span (a child of the caller's span: the node's
// command span for the command hook) and every ambassador call is one
// client span. Without a tracer no span is started. The message itself
// carries the caller's W3C trace context to the guest (Command.trace).

// Span names the host records.
const (
	SpanSidecar    = "troupe.plugin.sidecar"
	SpanAmbassador = "troupe.plugin.ambassador"
)

// Span attribute keys.
const (
	AttrPlugin    = "troupe.plugin"
	AttrHook      = "troupe.plugin.hook"
	AttrRejected  = "troupe.plugin.rejected"
	AttrOperation = "troupe.plugin.operation"
)

// traceSidecar runs one sidecar (runSidecar) inside its span.
func (h *Host) traceSidecar(ctx context.Context, v *version, hook troupev1.Hook, projection string, msg any) (Decision, error) {
	tr := h.cfg.Tracer
	if tr == nil || !trace.SpanFromContext(ctx).IsRecording() {
		// Sidecar spans are children of a recorded span only (the
		// command's): an event or topic delivery outside a trace, or a
		// trace sampled out, records none.
		return h.runSidecar(ctx, v, hook, projection, msg)
	}
	ctx, span := tr.Start(ctx, SpanSidecar, trace.WithAttributes(
		attribute.String(AttrPlugin, v.name),
		attribute.String(AttrHook, hookName(hook)),
	))
	d, err := h.runSidecar(ctx, v, hook, projection, msg)
	if d.Rejected {
		span.SetAttributes(attribute.Bool(AttrRejected, true))
		span.SetStatus(otelcodes.Error, d.Reason)
	}
	endSpan(span, err)
	return d, err
}

// Call invokes the ambassador plugin name. The plugin's HTTP requests (via
// http_call) go only to its allowed hosts and share the call's deadline,
// which is ctx's or the manifest's timeout, whichever is sooner. A
// rejection is a *RejectedError; a plugin failure a *CallError. With a
// tracer, the call is one client span.
func (h *Host) Call(ctx context.Context, name string, call *troupev1.AmbassadorCall) (*troupev1.AmbassadorReply, error) {
	tr := h.cfg.Tracer
	if tr == nil {
		return h.call(ctx, name, call)
	}
	ctx, span := tr.Start(ctx, SpanAmbassador, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String(AttrPlugin, name),
		attribute.String(AttrOperation, call.GetOperation()),
	))
	reply, err := h.call(ctx, name, call)
	endSpan(span, err)
	return reply, err
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}
