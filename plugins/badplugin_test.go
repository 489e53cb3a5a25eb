package plugins

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBadPluginLoad: a plugin that cannot load is disabled with a clear
// error; the host keeps serving the others.
func TestBadPluginLoad(t *testing.T) {
	good := buildWAT(t, "allow")
	tests := []struct {
		name     string
		wasm     func(t *testing.T) []byte
		manifest string
		want     string
	}{
		{"invalid bytes", func(*testing.T) []byte { return []byte("this is not wasm at all") }, "", "invalid magic number"},
		{"empty file", func(*testing.T) []byte { return nil }, "", "compile:"},
		{"missing export", func(t *testing.T) []byte { return buildWAT(t, "missing-export") }, "", `ABI violation: missing export "handle"`},
		{"wrong signature", func(t *testing.T) []byte { return buildWAT(t, "wrong-signature") }, "", `export "handle" has signature (i32, i32) -> (i32), want (i32, i32) -> (i64)`},
		{"wrong ABI version", func(t *testing.T) []byte { return buildWAT(t, "wrong-abi") }, "", "abi_version returned 2, want 1"},
		{"bad manifest", func(*testing.T) []byte { return good }, "name = \"x\"\nkind = \"sidekick\"\n", `kind "sidekick"`},
		{"unknown manifest key", func(*testing.T) []byte { return good }, "name = \"x\"\n[limits]\nmemory = 5\n", "unknown keys limits.memory"},
		{"manifest name mismatch", func(*testing.T) []byte { return good }, "name = \"other\"\n", `manifest name "other" does not match`},
		{"memory minimum over limit", func(t *testing.T) []byte { return buildGo(t, "wasm-examples/go/audit-log") }, "name = \"x\"\n[limits]\nmemory_pages = 4\n", "compile:"},
		{"missing secret", func(*testing.T) []byte { return good }, "name = \"x\"\n[capabilities.secrets]\ntoken = \"env:TROUPE_TEST_SURELY_UNSET\"\n", "TROUPE_TEST_SURELY_UNSET is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			man := tt.manifest
			if man == "" {
				man = "name = \"x\"\n[hooks]\ncommands = [\"*\"]\n"
			}
			writePlugin(t, dir, "x", tt.wasm(t), man)
			writePlugin(t, dir, "good", good, "")
			h := startHost(t, dir, nil)
			in := h.info(t, "x")
			if in.State != StateFailed || !strings.Contains(in.LastError, tt.want) {
				t.Fatalf("info = %+v\nwant failed with %q", in, tt.want)
			}
			if g := h.info(t, "good"); g.State != StateReady {
				t.Fatalf("good plugin: %+v", g)
			}
			if d, err := h.Command(context.Background(), bankCmd("Deposit", "{}")); err != nil || d.Rejected {
				t.Fatalf("Command = %+v, %v; want allowed", d, err)
			}
			if got := h.metric(t, "troupe_plugin_loads_total", map[string]string{"plugin": "x", "result": "error"}); got != 1 {
				t.Errorf("loads_total{error} = %v, want 1", got)
			}
			if got := h.metric(t, "troupe_plugin_up", map[string]string{"plugin": "x"}); got != 0 {
				t.Errorf("up = %v, want 0", got)
			}
		})
	}
}

// TestBadPluginCall: a plugin that loads but misbehaves on a call fails
// that call; the failure policy decides the message; the host survives and
// the next call works on a fresh instance.
func TestBadPluginCall(t *testing.T) {
	tests := []struct {
		fixture string
		limits  string
		reason  string // failures_total reason label
		want    error
		msg     string
	}{
		{"trap", "", "trap", ErrTrap, "unreachable"},
		{"loop", "timeout = \"50ms\"\n", "timeout", ErrTimeout, "deadline exceeded: call ran"},
		{"membomb", "memory_pages = 64\n", "trap", ErrTrap, "unreachable"},
		{"oversized", "", "output", ErrOutputTooLarge, "verdict of 2097152 bytes, limit 1048576"},
		{"oob-result", "", "abi", ErrABI, "outside guest memory"},
		{"bad-verdict", "", "verdict", ErrBadVerdict, "undecodable verdict"},
		{"oob-log", "", "abi", ErrABI, "log message: range [2147483632, +100) outside guest memory"},
		{"oob-log-long", "", "abi", ErrABI, "log message: range [60000, +10000) outside guest memory"},
	}
	for _, tt := range tests {
		for _, policy := range []string{"reject", "pass"} {
			t.Run(tt.fixture+"/"+policy, func(t *testing.T) {
				wasm := buildWAT(t, tt.fixture)
				dir := t.TempDir()
				man := fmt.Sprintf("name = %q\non_failure = %q\n[hooks]\ncommands = [\"*\"]\n[limits]\n%s", tt.fixture, policy, tt.limits)
				writePlugin(t, dir, tt.fixture, wasm, man)
				h := startHost(t, dir, nil)
				if in := h.info(t, tt.fixture); in.State != StateReady {
					t.Fatalf("fixture did not load: %+v", in)
				}
				v := h.chain.Load().byName[tt.fixture]
				created := v.seq.Load()
				for i := 0; i < 2; i++ { // the second call runs on a new instance
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					start := time.Now()
					d, err := h.Command(ctx, bankCmd("Deposit", `{"amount":1}`))
					cancel()
					if err != nil {
						t.Fatalf("call %d: err = %v; failures must go through the policy", i, err)
					}
					if took := time.Since(start); took > 5*time.Second {
						t.Fatalf("call %d took %v", i, took)
					}
					switch policy {
					case "reject":
						var ce *CallError
						if !d.Rejected || d.Plugin != tt.fixture || !errors.As(d.Err, &ce) || !errors.Is(d.Err, tt.want) || !strings.Contains(d.Reason, tt.msg) {
							t.Fatalf("call %d: Decision = %+v (err %v)\nwant rejected by policy with %v containing %q", i, d, d.Err, tt.want, tt.msg)
						}
					case "pass":
						if d.Rejected {
							t.Fatalf("call %d: Decision = %+v, want passed", i, d)
						}
					}
				}
				// The first call used the instance of the load-time self-check;
				// the second needed a new one.
				if n := v.seq.Load() - created; n != 1 {
					t.Errorf("%d instances created for the second failed call, want 1: a failed instance must never be reused", n)
				}
				v.mu.Lock()
				live := v.live
				v.mu.Unlock()
				if live != 0 {
					t.Errorf("%d live instances after only failed calls, want 0 (discarded)", live)
				}
				if got := h.metric(t, "troupe_plugin_failures_total", map[string]string{"plugin": tt.fixture, "reason": tt.reason}); got != 2 {
					t.Errorf("failures_total{reason=%s} = %v, want 2", tt.reason, got)
				}
				in := h.info(t, tt.fixture)
				if in.State != StateReady || !strings.Contains(in.LastError, tt.msg) {
					t.Errorf("info = %+v, want ready with last error containing %q", in, tt.msg)
				}
				h.Host.Close()
			})
		}
	}
}

// TestGoGuestFailures: a Go guest that exhausts its memory limit dies (the
// instance is discarded, the runtime's message is logged); a handler panic is
// recovered by the SDK and reported as a guest failure.
func TestGoGuestFailures(t *testing.T) {
	wasm := buildGo(t, "plugins/testdata/gobomb")
	dir := t.TempDir()
	writePlugin(t, dir, "gobomb", wasm, "name = \"gobomb\"\n[hooks]\ncommands = [\"*\"]\n[limits]\nmemory_pages = 128\ntimeout = \"5s\"\n")
	h := startHost(t, dir, nil)
	ctx := context.Background()

	d, err := h.Command(ctx, bankCmd("Boom", ""))
	if err != nil || !d.Rejected || !errors.Is(d.Err, ErrTrap) || !strings.Contains(d.Reason, "guest trapped") {
		t.Fatalf("Boom: %+v, %v", d, err)
	}
	if !strings.Contains(h.logs.String(), "out of memory") {
		t.Fatalf("the guest's out-of-memory message was not logged:\n%s", h.logs.String())
	}
	d, err = h.Command(ctx, bankCmd("Panic", ""))
	if err != nil || !d.Rejected || !errors.Is(d.Err, ErrGuest) || !strings.Contains(d.Reason, "assignment to entry in nil map") {
		t.Fatalf("Panic: %+v, %v", d, err)
	}
	if d, err := h.Command(ctx, bankCmd("Deposit", "")); err != nil || d.Rejected {
		t.Fatalf("after failures: %+v, %v", d, err)
	}
	if got := h.metric(t, "troupe_plugin_failures_total", map[string]string{"plugin": "gobomb", "reason": "trap"}); got != 1 {
		t.Errorf("failures{trap} = %v", got)
	}
	if got := h.metric(t, "troupe_plugin_failures_total", map[string]string{"plugin": "gobomb", "reason": "guest"}); got != 1 {
		t.Errorf("failures{guest} = %v", got)
	}
}
