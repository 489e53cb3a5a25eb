package node

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/plugins"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// allowPlugin writes a sidecar that reads every command of kind account
// and allows it (plugins/testdata/allow.wat).
func allowPlugin(t *testing.T) string {
	t.Helper()
	wat2wasm, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Fatal("wat2wasm (wabt) is needed: run `make toolchains` (wasm-examples/install-toolchains.sh)")
	}
	dir := t.TempDir()
	if out, err := exec.Command(wat2wasm, "../../plugins/testdata/allow.wat", "-o", filepath.Join(dir, "allow.wasm")).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, out)
	}
	man := "name = \"allow\"\n[hooks]\nkinds = [\"account\"]\ncommands = [\"Open\", \"Deposit\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "allow.toml"), []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCommandSpanTree sends one command with a caller's traceparent to a
// real node with a sidecar plugin and checks the tree of spans it records,
// from the API to the NATS publish of its event, and that the published
// message carries the publish span's context.
func TestCommandSpanTree(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	cfg := testConfig(t)
	cfg.PluginDir = allowPlugin(t)
	cfg.TracerProvider = tp
	n := startNode(t, cfg)
	defer n.Close()

	nc, err := nats.Connect(n.Bus().ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe("troupe.events.account.>", msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const callerSpan = "00f067aa0ba902b7"
	c := troupev1connect.NewCommandServiceClient(http.DefaultClient, "http://"+n.HTTPAddr())
	st, _ := structpb.NewStruct(map[string]any{})
	req := connect.NewRequest(&troupev1.SendRequest{Kind: "account", Id: "traced-1", Type: "Open", Payload: st})
	req.Header().Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Send(ctx, req); err != nil {
		t.Fatal(err)
	}
	var msg *nats.Msg
	select {
	case msg = <-msgs:
	case <-ctx.Done():
		t.Fatal("no event published within 10 s")
	}

	// The publish span ends right after the message is sent: wait for it.
	var spans []sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(5 * time.Second); ; {
		spans = rec.Ended()
		if slices.ContainsFunc(spans, func(s sdktrace.ReadOnlySpan) bool { return s.Name() == SpanPublish }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s span within 5 s; spans: %v", SpanPublish, names(spans))
		}
		time.Sleep(5 * time.Millisecond) // polling a recorder, bounded above
	}

	// one finds the only span with name (and, when given, attribute
	// key=value) in the caller's trace.
	one := func(name, key, value string) sdktrace.ReadOnlySpan {
		t.Helper()
		var found []sdktrace.ReadOnlySpan
		for _, s := range spans {
			if s.Name() != name || s.SpanContext().TraceID().String() != callerTrace {
				continue
			}
			if key != "" && !slices.ContainsFunc(s.Attributes(), func(kv attribute.KeyValue) bool {
				return string(kv.Key) == key && kv.Value.Emit() == value
			}) {
				continue
			}
			found = append(found, s)
		}
		if len(found) != 1 {
			t.Fatalf("%d spans %s %s=%s in the caller's trace; all spans: %v", len(found), name, key, value, names(spans))
		}
		return found[0]
	}
	parentIs := func(child, parent sdktrace.ReadOnlySpan) {
		t.Helper()
		if child.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%s: parent %s, want %s (%s)", child.Name(), child.Parent().SpanID(), parent.SpanContext().SpanID(), parent.Name())
		}
	}

	cmd := one(SpanCommand, "", "")
	if got := cmd.Parent().SpanID().String(); got != callerSpan || !cmd.Parent().IsRemote() {
		t.Errorf("command span's parent %s (remote %v), want the caller's %s", got, cmd.Parent().IsRemote(), callerSpan)
	}
	if cmd.SpanKind() != trace.SpanKindServer {
		t.Errorf("command span kind %v", cmd.SpanKind())
	}
	plugin := one(plugins.SpanSidecar, plugins.AttrPlugin, "allow")
	parentIs(plugin, cmd)
	turn := one(actors.SpanEntityTurn, actors.AttrStream, "account/traced-1")
	parentIs(turn, cmd)
	if !plugin.EndTime().Before(turn.StartTime()) && !plugin.EndTime().Equal(turn.StartTime()) {
		t.Errorf("the sidecar span ends after the entity turn starts")
	}
	parentIs(one(actors.SpanJournalAppend, actors.AttrStream, "account/traced-1"), turn)
	apply := one(actors.SpanProjectionApply, actors.AttrProjection, eventsPublisher)
	parentIs(apply, turn)
	pub := one(SpanPublish, "", "")
	parentIs(pub, apply)
	if pub.SpanKind() != trace.SpanKindProducer {
		t.Errorf("publish span kind %v", pub.SpanKind())
	}
	// The bank's own projection applies the event too, under the turn.
	for _, s := range spans {
		if s.Name() == actors.SpanProjectionApply && s.SpanContext().TraceID().String() == callerTrace {
			parentIs(s, turn)
		}
	}
	want := "00-" + callerTrace + "-" + pub.SpanContext().SpanID().String() + "-01"
	if got := msg.Header.Get("traceparent"); got != want {
		t.Errorf("published traceparent %q, want the publish span's %q", got, want)
	}
	// The event in the journal names the turn.
	for ev, err := range n.journal.Read(ctx, "account/traced-1", 1, 0) {
		if err != nil {
			t.Fatal(err)
		}
		want := "00-" + callerTrace + "-" + turn.SpanContext().SpanID().String() + "-01"
		if got := ev.Metadata["traceparent"]; got != want {
			t.Errorf("event %d traceparent %q, want the turn's %q", ev.Sequence, got, want)
		}
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name()+"("+s.SpanContext().SpanID().String()+"<"+s.Parent().SpanID().String()+")")
	}
	return out
}

// TestTracingFromEnv: tracing is off unless the OTEL_* environment asks
// for an exporter, and bad settings are refused with a clear error.
func TestTracingFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		on      bool
		wantErr string
	}{
		{name: "nothing set", env: nil},
		{name: "sampler alone", env: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}},
		{name: "endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: true},
		{name: "traces endpoint, 1 in 100", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
			"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}, on: true},
		{name: "exporter otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}},
		{name: "grpc", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, wantErr: "http/protobuf only"},
		{name: "zipkin", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, wantErr: "otlp only"},
		{name: "bad ratio", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, wantErr: "between 0 and 1"},
		{name: "bad sampler", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, wantErr: "OTEL_TRACES_SAMPLER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			tp, err := tracingFromEnv(context.Background(), getenv, "node-1")
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrTracingConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (tp != nil) != tc.on {
				t.Fatalf("provider %v, want on=%v", tp, tc.on)
			}
			if tp != nil {
				if err := tp.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
