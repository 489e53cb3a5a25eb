package actors

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func TestSampledTraceparent(t *testing.T) {
	for tp, want := range map[string]bool{
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01": true,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00": false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03": true,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02": false,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff": true,
		"":  false,
		"1": false,
	} {
		if got := sampledTraceparent(tp); got != want {
			t.Errorf("sampledTraceparent(%q) = %v, want %v", tp, got, want)
		}
	}
}

// A turn that was sampled out gives its events no trace context; a
// sampled one gives them its own.
func TestEventTraceOnlyWhenSampled(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	caller := &troupev1.TraceContext{Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"}
	for _, tc := range []struct {
		name  string
		flags trace.TraceFlags
		want  string
	}{
		{"sampled", trace.FlagsSampled, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"sampled out", 0, ""},
	} {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: tc.flags})
		got := eventTrace(trace.ContextWithSpanContext(context.Background(), sc), caller)
		if got.GetTraceparent() != tc.want {
			t.Errorf("%s: events carry %q, want %q", tc.name, got.GetTraceparent(), tc.want)
		}
	}
	// No span of ours (tracing on, but the turn has none): the caller's.
	if got := eventTrace(context.Background(), caller); got != caller {
		t.Errorf("no span: %v, want the caller's trace", got)
	}
}
