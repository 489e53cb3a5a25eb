package actors

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Tracing (docs/adr/0016-tracing.md). The runtime records spans through
// the OpenTelemetry trace API only (Config.Tracer); the SDK and exporters
// are the node's. With no tracer the runtime starts no span at all, and
// the caller's W3C trace context still travels as today: on the command
// envelope and in the metadata of the events it appends.
//
// Spans, parent first: the caller's span (the node's "troupe.command") →
// troupe.entity.turn (the entity's handling of one command, on the
// entity's goroutine) → troupe.journal.append. Each event's metadata
// carries the turn's traceparent, so a projection's troupe.projection.apply
// of that event (on the projection's goroutine, later) is a child of the
// turn, and whatever the projection does (the events publisher's NATS
// publish, a reactor's commands) continues the same trace.

// Span names the runtime records.
const (
	SpanEntityTurn      = "troupe.entity.turn"
	SpanJournalAppend   = "troupe.journal.append"
	SpanProjectionApply = "troupe.projection.apply"
)

// Span attribute keys shared by the runtime, the node and the plugin host.
const (
	AttrKind       = "troupe.kind"
	AttrCommand    = "troupe.command"
	AttrEntity     = "troupe.entity"
	AttrStream     = "troupe.stream"
	AttrNode       = "troupe.node"
	AttrEvents     = "troupe.events"
	AttrSequence   = "troupe.sequence"
	AttrPosition   = "troupe.position"
	AttrProjection = "troupe.projection"
)

// w3c is the W3C trace-context propagator (traceparent, tracestate).
var w3c = propagation.TraceContext{}

// traceCarrier reads and writes a command envelope's trace context.
type traceCarrier struct{ tc *troupev1.TraceContext }

func (c traceCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return c.tc.GetTraceparent()
	case "tracestate":
		return c.tc.GetTracestate()
	}
	return ""
}

func (c traceCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		c.tc.Traceparent = value
	case "tracestate":
		c.tc.Tracestate = value
	}
}

func (c traceCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// ContextWithTrace returns ctx with the remote span context of tc (a
// command envelope's W3C trace context) as its parent span, when tc holds a
// valid traceparent; otherwise ctx unchanged.
func ContextWithTrace(ctx context.Context, tc *troupev1.TraceContext) context.Context {
	if tc.GetTraceparent() == "" {
		return ctx
	}
	return w3c.Extract(ctx, traceCarrier{tc})
}

// TraceOf returns the W3C trace context of the span in ctx, for a command
// envelope; nil when ctx carries no valid span context.
func TraceOf(ctx context.Context) *troupev1.TraceContext {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	tc := &troupev1.TraceContext{}
	w3c.Inject(ctx, traceCarrier{tc})
	return tc
}

// EventSpanContext returns the span context an event's metadata names
// ("traceparent", "tracestate"); invalid when it names none.
func EventSpanContext(ev *journal.Event) trace.SpanContext {
	if ev.Metadata["traceparent"] == "" {
		return trace.SpanContext{}
	}
	ctx := w3c.Extract(context.Background(), propagation.MapCarrier(ev.Metadata))
	return trace.SpanContextFromContext(ctx)
}

// EndSpan records err (when non-nil) on span and ends it.
func EndSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}

// startTurn starts the span of an entity's turn for cmd, the child of the
// sender's span (in dctx, the delivery's context) or else of the
// envelope's trace context. The returned context lives as long as the
// runtime (appends must finish even when the caller has gone) and carries
// the span.
func (rt *Runtime) startTurn(dctx context.Context, cmd *troupev1.Command, stream string) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(dctx)
	if !parent.IsValid() {
		parent = trace.SpanContextFromContext(ContextWithTrace(context.Background(), cmd.GetTrace()))
	}
	ctx := rt.ctx
	if parent.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, parent)
		if !parent.IsSampled() {
			// Sampled out upstream: record nothing below, but pass the
			// decision on (the events name the unsampled parent).
			return ctx, nil
		}
	}
	return rt.cfg.Tracer.Start(ctx, SpanEntityTurn, trace.WithAttributes(
		attribute.String(AttrKind, cmd.GetKind()),
		attribute.String(AttrCommand, cmd.GetType()),
		attribute.String(AttrStream, stream),
		attribute.String(AttrNode, rt.cfg.Node),
	))
}

// appendSpan starts the span of one journal append, under the turn's span
// when that one records (an append outside a recorded turn gets none).
func (rt *Runtime) appendSpan(ctx context.Context, req *journal.AppendRequest) (context.Context, trace.Span) {
	if rt.cfg.Tracer == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	return rt.cfg.Tracer.Start(ctx, SpanJournalAppend, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String(AttrStream, req.Stream),
		attribute.Int(AttrEvents, len(req.Events)),
		attribute.Int64(AttrSequence, int64(req.Expected)),
	))
}

// appended ends an append's span and reports its latency (Config.OnAppend).
func (rt *Runtime) appended(kind string, start time.Time, span trace.Span, res journal.AppendResult, err error) {
	if f := rt.cfg.OnAppend; f != nil {
		f(kind, time.Since(start), err)
	}
	if span != nil {
		if err == nil {
			span.SetAttributes(attribute.Int64(AttrPosition, int64(res.LastPosition)))
		}
		EndSpan(span, err)
	}
}

// eventTrace is the trace context to record on a command's events: the
// turn's span when tracing is on, else the envelope's (the caller's).
func eventTrace(ctx context.Context, tc *troupev1.TraceContext) *troupev1.TraceContext {
	sc := trace.SpanContextFromContext(ctx)
	if sc.IsValid() && !sc.IsSampled() {
		// The turn was sampled out: nothing below it records a span,
		// so its events carry no trace context (each would cost every
		// reader of the log a map and an extraction, for nothing).
		return nil
	}
	if own := TraceOf(ctx); own != nil {
		return own
	}
	return tc
}

// sampledTraceparent reports whether a W3C traceparent
// ("00-<trace id>-<span id>-<flags>") has its sampled flag set, without
// parsing the rest: the cheap test before an extraction.
func sampledTraceparent(tp string) bool {
	if len(tp) < 2 {
		return false
	}
	switch tp[len(tp)-1] {
	case '1', '3', '5', '7', '9', 'b', 'd', 'f', 'B', 'D', 'F':
		return true
	}
	return false
}

// applySpan starts the span of a projection's apply of ev, the child of
// the span the event's metadata names. No span when tracing is off, when
// the event carries no trace context (a timer's events, older events) or
// when its trace was sampled out (the parent-based decision, without the
// cost of a span that records nothing).
func (p *projection) applySpan(ev *journal.Event) trace.Span {
	tr := p.rt.cfg.Tracer
	if tr == nil || !sampledTraceparent(ev.Metadata["traceparent"]) {
		return nil
	}
	parent := EventSpanContext(ev)
	if !parent.IsSampled() {
		return nil
	}
	_, span := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), SpanProjectionApply,
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
			attribute.String(AttrProjection, p.def.Name),
			attribute.String(AttrStream, ev.Stream),
			attribute.Int64(AttrSequence, int64(ev.Sequence)),
			attribute.Int64(AttrPosition, int64(ev.Position)),
		))
	return span
}

// SpanContext is the span of the event being applied (its
// troupe.projection.apply span) when tracing is on and the event carries a
// trace context; invalid otherwise. A projection that calls out (a
// publisher) starts its spans under it:
//
//	ctx := trace.ContextWithSpanContext(ctx, tx.SpanContext())
func (t *Tx) SpanContext() trace.SpanContext { return t.span }
