package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

const testToken = "s3cr3t-token-value"

// partner is a fake partner API: fail makes the next calls answer 503.
type partner struct {
	srv      *httptest.Server
	calls    atomic.Int64
	fail     atomic.Int64 // answer 503 this many more times
	status   atomic.Int64 // when non-zero, answer this status
	bodySize atomic.Int64 // when non-zero, answer a body this large
	delay    atomic.Int64 // nanoseconds to wait before answering
	authOK   atomic.Bool
	// traceparent is the last request's traceparent header ("" if none).
	traceparent atomic.Pointer[string]
}

func newPartner(t *testing.T) *partner {
	p := &partner{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.calls.Add(1)
		p.authOK.Store(r.Header.Get("Authorization") == "Bearer "+testToken)
		tp := r.Header.Get("Traceparent")
		p.traceparent.Store(&tp)
		body, _ := io.ReadAll(r.Body) // lets the server notice a client that gives up
		if d := p.delay.Load(); d > 0 {
			select {
			case <-time.After(time.Duration(d)):
			case <-r.Context().Done():
				return
			}
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/charges" {
			http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
			return
		}
		if p.fail.Add(-1) >= 0 {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		if s := p.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			fmt.Fprint(w, `{"error":"insufficient funds"}`)
			return
		}
		var in struct {
			Account string `json:"account"`
			Amount  int64  `json:"amount"`
		}
		_ = json.Unmarshal(body, &in)
		w.Header().Set("X-Request-Id", "req-42")
		if n := p.bodySize.Load(); n > 0 {
			fmt.Fprintf(w, `{"id":"ch_big","status":"%s"}`, strings.Repeat("x", int(n)))
			return
		}
		fmt.Fprintf(w, `{"id":"ch_%s_%d","status":"succeeded"}`, in.Account, in.Amount)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func partnerManifest(baseURL, egress, timeout string) string {
	return fmt.Sprintf(`name = "partner-api"
kind = "ambassador"
[limits]
timeout = %q
max_response = 4096
[capabilities]
egress = [%q]
clock = true
[capabilities.config]
base_url = %q
max_attempts = "3"
[capabilities.secrets]
api_token = "env:PARTNER_API_TOKEN"
`, timeout, egress, baseURL)
}

func startPartnerHost(t *testing.T, manifest string, mods ...func(*Config)) *testHost {
	t.Helper()
	wasm := buildGo(t, "wasm-examples/go/partner-api")
	dir := t.TempDir()
	writePlugin(t, dir, "partner-api", wasm, manifest)
	h := startHost(t, dir, func(c *Config) {
		c.Getenv = func(k string) (string, bool) {
			if k == "PARTNER_API_TOKEN" {
				return testToken, true
			}
			return "", false
		}
		for _, mod := range mods {
			mod(c)
		}
	})
	if in := h.info(t, "partner-api"); in.State != StateReady || in.Kind != KindAmbassador {
		t.Fatalf("info = %+v", in)
	}
	return h
}

func charge(account string, amount int) *troupev1.AmbassadorCall {
	return &troupev1.AmbassadorCall{
		Operation:   "charge",
		Payload:     []byte(fmt.Sprintf(`{"account":%q,"amount":%d}`, account, amount)),
		ContentType: "application/json",
	}
}

func TestAmbassador(t *testing.T) {
	p := newPartner(t)
	addr := strings.TrimPrefix(p.srv.URL, "http://")
	h := startPartnerHost(t, partnerManifest(p.srv.URL, addr, "3s"))
	ctx := context.Background()

	t.Run("success", func(t *testing.T) {
		reply, err := h.Call(ctx, "partner-api", charge("acc-1", 100))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(reply.GetPayload()); got != `{"charge_id":"ch_acc-1_100","status":"succeeded","attempts":1}` {
			t.Fatalf("reply = %s", got)
		}
		if reply.GetMetadata()["partner-request-id"] != "req-42" || reply.GetContentType() != "application/json" {
			t.Fatalf("reply = %+v", reply)
		}
		if !p.authOK.Load() {
			t.Fatal("partner did not receive the bearer token")
		}
	})
	t.Run("retries 5xx", func(t *testing.T) {
		p.fail.Store(2)
		before := p.calls.Load()
		reply, err := h.Call(ctx, "partner-api", charge("acc-2", 5))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(reply.GetPayload()), `"attempts":3`) || p.calls.Load()-before != 3 {
			t.Fatalf("reply = %s after %d partner calls", reply.GetPayload(), p.calls.Load()-before)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		p.fail.Store(10)
		defer p.fail.Store(0)
		_, err := h.Call(ctx, "partner-api", charge("acc-3", 5))
		var ce *CallError
		if !errors.As(err, &ce) || !errors.Is(err, ErrGuest) || !strings.Contains(err.Error(), "partner unavailable after 3 attempts: partner answered 503") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("4xx rejects", func(t *testing.T) {
		p.status.Store(402)
		defer p.status.Store(0)
		_, err := h.Call(ctx, "partner-api", charge("acc-4", 5))
		var re *RejectedError
		if !errors.As(err, &re) || re.Reason != "partner refused the charge: insufficient funds" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("response too large", func(t *testing.T) {
		p.bodySize.Store(10000)
		defer p.bodySize.Store(0)
		_, err := h.Call(ctx, "partner-api", charge("acc-5", 5))
		if err == nil || !strings.Contains(err.Error(), "response body larger than 4096 bytes") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("bad input rejects", func(t *testing.T) {
		_, err := h.Call(ctx, "partner-api", &troupev1.AmbassadorCall{Operation: "refund"})
		var re *RejectedError
		if !errors.As(err, &re) || !strings.Contains(re.Reason, `unknown operation "refund"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown ambassador", func(t *testing.T) {
		if _, err := h.Call(ctx, "nope", charge("a", 1)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
	if strings.Contains(h.logs.String(), testToken) {
		t.Fatal("the secret appears in the logs")
	}
	if got := h.metric(t, "troupe_plugin_guest_total", map[string]string{"plugin": "partner-api", "name": "retries"}); got < 2 {
		t.Errorf("retries counter = %v", got)
	}
}

func TestAmbassadorEgressDenied(t *testing.T) {
	p := newPartner(t)
	// Allow a different port only: the partner's own address is denied.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := l.Addr().String()
	l.Close()
	h := startPartnerHost(t, partnerManifest(p.srv.URL, other, "3s"))
	_, err = h.Call(context.Background(), "partner-api", charge("acc-1", 1))
	if err == nil || !strings.Contains(err.Error(), "egress denied") || !strings.Contains(err.Error(), "not on the allow-list of plugin partner-api") {
		t.Fatalf("err = %v, want egress denied", err)
	}
	if p.calls.Load() != 0 {
		t.Fatalf("partner received %d calls", p.calls.Load())
	}
	if !strings.Contains(h.logs.String(), "egress denied") {
		t.Fatalf("denial not logged:\n%s", h.logs.String())
	}
}

func TestAmbassadorDeadline(t *testing.T) {
	p := newPartner(t)
	p.delay.Store(int64(10 * time.Second))
	addr := strings.TrimPrefix(p.srv.URL, "http://")
	h := startPartnerHost(t, partnerManifest(p.srv.URL, addr, "300ms"))
	start := time.Now()
	_, err := h.Call(context.Background(), "partner-api", charge("acc-1", 1))
	took := time.Since(start)
	if err == nil || took > 3*time.Second {
		t.Fatalf("Call = %v after %v; want a failure within the 300ms deadline", err, took)
	}
	var ce *CallError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %T %v, want *CallError", err, err)
	}
	t.Logf("failed after %v: %v", took, err)
	// The plugin still serves: the interrupted instance was discarded and a
	// new one takes its place. Under the race detector on a loaded machine,
	// instantiating the 2.7 MB Go guest can itself overrun its load bound
	// (wazero copies its data segments in instrumented Go), so a few
	// attempts are allowed; a plugin broken for good fails them all.
	p.delay.Store(0)
	for attempt := 1; ; attempt++ {
		_, err := h.Call(context.Background(), "partner-api", charge("acc-1", 1))
		if err == nil {
			break
		}
		if attempt == 5 {
			t.Fatalf("after a deadline, %d calls failed; the last: %v", attempt, err)
		}
		t.Logf("after a deadline, call %d: %v", attempt, err)
	}
}

// An ambassador's outbound request carries the W3C traceparent of the
// call, so that the partner's spans join the trace: with tracing on it
// names the troupe.plugin.ambassador span; with tracing off the caller's
// span context passes through, and without one no header is sent.
func TestAmbassadorCarriesTraceparent(t *testing.T) {
	p := newPartner(t)
	addr := strings.TrimPrefix(p.srv.URL, "http://")
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	traced := startPartnerHost(t, partnerManifest(p.srv.URL, addr, "3s"), func(c *Config) { c.Tracer = tp.Tracer("test") })
	untraced := startPartnerHost(t, partnerManifest(p.srv.URL, addr, "3s"))

	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
		TraceFlags: trace.FlagsSampled, Remote: true,
	})
	ambassadorSpan := func(t *testing.T) sdktrace.ReadOnlySpan {
		t.Helper()
		for _, s := range rec.Ended() {
			if s.Name() == SpanAmbassador {
				return s
			}
		}
		t.Fatalf("no %s span among %d", SpanAmbassador, len(rec.Ended()))
		return nil
	}
	tests := []struct {
		name string
		host *testHost
		ctx  context.Context
		// want returns the expected header ("" for none).
		want func(t *testing.T) string
	}{
		{"traced, under the caller's span", traced, trace.ContextWithRemoteSpanContext(context.Background(), remote), func(t *testing.T) string {
			s := ambassadorSpan(t)
			if s.Parent().SpanID() != remote.SpanID() {
				t.Errorf("the ambassador span's parent is %s, want the caller's %s", s.Parent().SpanID(), remote.SpanID())
			}
			return "00-" + remote.TraceID().String() + "-" + s.SpanContext().SpanID().String() + "-01"
		}},
		{"traced, a new trace", traced, context.Background(), func(t *testing.T) string {
			sc := ambassadorSpan(t).SpanContext()
			return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
		}},
		{"untraced, the caller's context passes through", untraced, trace.ContextWithRemoteSpanContext(context.Background(), remote), func(*testing.T) string {
			return "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		}},
		{"untraced, no context, no header", untraced, context.Background(), func(*testing.T) string { return "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.Reset()
			empty := "unset"
			p.traceparent.Store(&empty)
			if _, err := tt.host.Call(tt.ctx, "partner-api", charge("acc-t", 1)); err != nil {
				t.Fatal(err)
			}
			got := *p.traceparent.Load()
			if want := tt.want(t); got != want {
				t.Fatalf("partner saw traceparent %q, want %q", got, want)
			}
		})
	}
}
