package node

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkTracing is the command path with tracing on: the SDK with a
// batching processor in front of an exporter that drops the spans (the
// export itself is the collector's cost, off the command path), sampling
// one trace in 100 (parentbased_traceidratio 0.01, what the goal
// names) and every trace. Compare with BenchmarkCommandPath in the same
// run.
func BenchmarkTracing(b *testing.B) {
	for _, tc := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{
		{"sampled=1/100", sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))},
		{"sampled=all", sdktrace.AlwaysSample()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(tc.sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
			defer tp.Shutdown(context.Background())
			benchCommands(b, benchPlugins(b), func(c *Config) { c.TracerProvider = tp })
		})
	}
}
