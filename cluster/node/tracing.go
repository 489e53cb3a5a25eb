package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/actors"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Tracing (docs/adr/0016-tracing.md, docs/operations.md "Tracing"). The
// node owns the OpenTelemetry SDK: Config.TracerProvider, or one built
// from the standard OTEL_* environment variables with an OTLP/HTTP
// exporter; with neither, tracing is off and no component starts a span.
// The node's spans:
//
//	troupe.command        (server)   one command on the node that runs it:
//	                                 the API or NATS intake, or a forwarded
//	                                 command on the shard's owner
//	troupe.forward        (client)   the NATS request to the shard's owner
//	troupe.events.publish (producer) one event put on NATS by the events
//	                                 publisher, under its projection apply
//
// The runtime adds troupe.entity.turn, troupe.journal.append and
// troupe.projection.apply (package actors), the plugin host
// troupe.plugin.sidecar and troupe.plugin.ambassador (package plugins).

// Span names the node records.
const (
	SpanCommand = "troupe.command"
	SpanForward = "troupe.forward"
	SpanPublish = "troupe.events.publish"
)

// tracerName is the instrumentation scope of every Troupe span.
const tracerName = "github.com/troupe-dev/troupe"

// ErrTracingConfig is a bad OTEL_* setting.
var ErrTracingConfig = errors.New("node: tracing configuration")

// tracingFromEnv builds a tracer provider from the OTEL_* environment
// (getenv), or returns nil when tracing is not asked for: neither
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT nor
// OTEL_TRACES_EXPORTER=otlp is set, or OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none. The exporter speaks OTLP over HTTP
// (http/protobuf, the protocol's default); it reads its endpoint, headers,
// timeout and compression from the environment itself, as the sampler
// (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG) and the batch processor
// (OTEL_BSP_*) do. Service name: OTEL_SERVICE_NAME, default "troupe";
// service.instance.id is the node id.
func tracingFromEnv(ctx context.Context, getenv func(string) string, nodeID string) (*sdktrace.TracerProvider, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return nil, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "none":
		return nil, nil
	case "":
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return nil, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: this build exports traces with otlp only (or none)", ErrTracingConfig, exp)
	}
	proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return nil, fmt.Errorf("%w: OTLP protocol %q: this build exports over http/protobuf only (the collector's port 4318)", ErrTracingConfig, proto)
	}
	if err := checkSampler(getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG")); err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: OTLP exporter: %v", ErrTracingConfig, err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "troupe"), attribute.String("service.instance.id", nodeID)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, fmt.Errorf("%w: resource: %v", ErrTracingConfig, err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// checkSampler refuses a sampler the SDK would silently replace by its
// default (it reports such errors only to the global error handler).
func checkSampler(name, arg string) error {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		if arg == "" {
			return nil // the SDK's default ratio, 1.0
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(arg), 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("%w: OTEL_TRACES_SAMPLER_ARG=%q: want a ratio between 0 and 1 (0.01 samples one trace in 100)", ErrTracingConfig, arg)
		}
		return nil
	}
	return fmt.Errorf("%w: OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio or parentbased_* of these", ErrTracingConfig, name)
}

// startTracing sets n.tracer from Config.TracerProvider or the
// environment. A provider the node built is shut down (its spans
// flushed) last, after everything that records spans has stopped.
func (n *Node) startTracing(ctx context.Context) error {
	tp := n.cfg.TracerProvider
	if tp == nil {
		sdk, err := tracingFromEnv(ctx, os.Getenv, n.ident.NodeID)
		if err != nil {
			return err
		}
		if sdk == nil {
			return nil
		}
		n.onStop("tracing", sdk.Shutdown)
		tp = sdk
		n.log.Info("tracing on: OTLP/HTTP exporter from the OTEL_* environment")
	}
	n.tracer = tp.Tracer(tracerName)
	return nil
}

// startCommand starts the span of a command this node runs (from the API,
// a NATS request or another node), the child of the envelope's trace
// context, and points the envelope at it: the plugins, the events and a
// forward see this span. cmd is the adapter's own decoded copy. Without a
// tracer it returns its arguments and a nil span.
func (n *Node) startCommand(ctx context.Context, cmd *troupev1.Command, forwarded bool) (context.Context, trace.Span) {
	if n.tracer == nil {
		return ctx, nil
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = actors.ContextWithTrace(ctx, cmd.GetTrace())
	}
	ctx, span := n.tracer.Start(ctx, SpanCommand, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String(actors.AttrKind, cmd.GetKind()),
		attribute.String(actors.AttrCommand, cmd.GetType()),
		attribute.String(actors.AttrEntity, cmd.GetEntityId()),
		attribute.String(actors.AttrNode, n.ident.NodeID),
		attribute.Bool("troupe.forwarded", forwarded),
	))
	cmd.Trace = actors.TraceOf(ctx)
	return ctx, span
}

// endCommand ends a command's span with its outcome.
func endCommand(span trace.Span, out *actors.Outcome, err error) {
	if span == nil {
		return
	}
	if out != nil {
		span.SetAttributes(attribute.Int64(actors.AttrSequence, int64(out.Sequence)),
			attribute.Int64(actors.AttrPosition, int64(out.Position)), attribute.Bool("troupe.duplicate", out.Duplicate))
	}
	actors.EndSpan(span, err)
}

// tracedForwarder records a client span around each forward and sends
// the owner this span as the envelope's trace context.
type tracedForwarder struct {
	next   actors.Forwarder
	tracer trace.Tracer
}

func (f tracedForwarder) Forward(ctx context.Context, owner string, cmd *troupev1.Command, external bool) (*actors.Outcome, error) {
	ctx, span := f.tracer.Start(ctx, SpanForward, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String(actors.AttrKind, cmd.GetKind()),
		attribute.String(actors.AttrEntity, cmd.GetEntityId()),
		attribute.String("troupe.owner", owner),
	))
	c := proto.Clone(cmd).(*troupev1.Command)
	c.Trace = actors.TraceOf(ctx)
	out, err := f.next.Forward(ctx, owner, c, external)
	endCommand(span, out, err)
	return out, err
}

// withTracing wraps the forwarder when tracing is on.
func (n *Node) withTracing(f actors.Forwarder) actors.Forwarder {
	if n.tracer == nil {
		return f
	}
	return tracedForwarder{next: f, tracer: n.tracer}
}

// publishTraced publishes one event's message inside a producer span, the
// child of the event's projection apply span, and sends that span as the
// message's traceparent.
func (n *Node) publishTraced(nc *nats.Conn, m *nats.Msg, parent trace.SpanContext, stream string) error {
	ctx := trace.ContextWithSpanContext(context.Background(), parent)
	ctx, span := n.tracer.Start(ctx, SpanPublish, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", m.Subject),
		attribute.String(actors.AttrStream, stream),
	))
	if tc := actors.TraceOf(ctx); tc != nil {
		m.Header.Set("traceparent", tc.GetTraceparent())
		if tc.GetTracestate() != "" {
			m.Header.Set("tracestate", tc.GetTracestate())
		}
	}
	err := nc.PublishMsg(m)
	actors.EndSpan(span, err)
	return err
}

// appendMetrics is the journal append latency histogram, fed by the
// runtime (actors.Config.OnAppend).
type appendMetrics struct{ latency *prometheus.HistogramVec }

func newAppendMetrics(reg prometheus.Registerer) (*appendMetrics, error) {
	m := &appendMetrics{latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "troupe_journal_append_duration_seconds",
		Help:    "Time for one entity's append to the journal to be acknowledged (durable per the sync policy, group commit included), by entity kind and result (ok, error).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
	}, []string{"kind", "result"})}
	if err := reg.Register(m.latency); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *appendMetrics) observe(kind string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.latency.WithLabelValues(kind, result).Observe(d.Seconds())
}
