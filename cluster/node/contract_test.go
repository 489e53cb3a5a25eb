package node

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// leaks are words that give away Go or protobuf internals in a message a
// client reads.
var leaks = []string{"proto:", "unmarshal", "troupev1", "Go struct", "json:", "struct field", "*", "reflect", "wire-format", "connect:"}

// answer is what a client saw on one transport.
type answer struct {
	code, message string
	retryAfter    string // the transport's retry hint, "" when none
}

// contractPlugins writes the plugins the contract test needs: the demo
// rate-limit (burst 2, almost no refill) on account Close, and a sidecar
// that never decides (loop.wat, 50 ms) on account Withdraw.
func contractPlugins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root, _ := filepath.Abs("../..")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(gobin, "build", "-buildmode=c-shared", "-o", filepath.Join(dir, "rate-limit.wasm"), ".")
	build.Dir = filepath.Join(root, "wasm-examples/go/rate-limit")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build rate-limit: %v\n%s", err, out)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("rate-limit.toml", `name = "rate-limit"
trusted = true
[hooks]
kinds = ["account"]
commands = ["Close"]
[limits]
max_instances = 1
[capabilities]
clock = true
[capabilities.config]
rate = "0.01"
burst = "2"
`)
	wat2wasm, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Fatal("wat2wasm (wabt) is needed for the plugin-timeout case: run `make toolchains` (wasm-examples/install-toolchains.sh)")
	}
	if out, err := exec.Command(wat2wasm, filepath.Join(root, "plugins/testdata/loop.wat"), "-o", filepath.Join(dir, "slow.wasm")).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, out)
	}
	write("slow.toml", `name = "slow"
on_failure = "reject"
[hooks]
kinds = ["account"]
commands = ["Withdraw"]
[limits]
timeout = "50ms"
`)
	return dir
}

// TestErrorContractOnEveryPath sends each bad input over HTTP (Connect
// JSON), gRPC and NATS requests and checks that every path answers the
// same code, with a message that names the problem and shows no Go or
// protobuf internals.
func TestErrorContractOnEveryPath(t *testing.T) {
	cfg := testConfig(t)
	cfg.PluginDir = contractPlugins(t)
	cfg.MaxRequestBytes = 4096
	n := startNode(t, cfg)
	defer n.Close()
	base := "http://" + n.HTTPAddr()
	nc, err := nats.Connect(n.Bus().ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	h1 := &http.Client{Timeout: 10 * time.Second}
	h2 := &http.Client{Timeout: 10 * time.Second, Transport: h2cTransport()}
	defer h2.CloseIdleConnections()
	defer h1.CloseIdleConnections()

	// httpCall posts a raw body to the API and decodes the JSON error.
	httpCall := func(t *testing.T, method, path, ctype string, body []byte) answer {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := h1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 {
			return answer{code: "ok", message: string(b)}
		}
		var e struct{ Code, Message string }
		if err := json.Unmarshal(b, &e); err != nil || e.Code == "" {
			t.Fatalf("%s %s: HTTP %d with a body that is no JSON error: %q", method, path, resp.StatusCode, b)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s %s: error with content type %q", method, path, ct)
		}
		return answer{e.Code, e.Message, resp.Header.Get("Retry-After")}
	}
	// grpcCall sends one raw gRPC message (protobuf bytes) and reads the
	// status from the trailers.
	grpcCall := func(t *testing.T, path string, msg []byte) answer {
		t.Helper()
		frame := make([]byte, 5+len(msg))
		binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
		copy(frame[5:], msg)
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(frame))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		get := func(k string) string {
			if v := resp.Trailer.Get(k); v != "" {
				return v
			}
			return resp.Header.Get(k)
		}
		st := get("Grpc-Status")
		msgText, _ := url.PathUnescape(get("Grpc-Message"))
		if st == "0" {
			return answer{code: "ok"}
		}
		names := map[string]string{"3": "invalid_argument", "9": "failed_precondition", "5": "not_found",
			"8": "resource_exhausted", "4": "deadline_exceeded", "14": "unavailable", "13": "internal", "2": "unknown", "12": "unimplemented"}
		code, ok := names[st]
		if !ok {
			code = "grpc status " + st
		}
		return answer{code, msgText, get("Retry-After")}
	}
	natsCall := func(t *testing.T, kind, id string, body []byte) answer {
		t.Helper()
		m, err := nc.Request("troupe.cmd."+kind+"."+id, body, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		code := m.Header.Get("Troupe-Error")
		if code == "" {
			return answer{code: "ok", message: string(m.Data)}
		}
		var e struct{ Code, Message string }
		if err := json.Unmarshal(m.Data, &e); err != nil || e.Code != code {
			t.Fatalf("NATS error body %q (header %s)", m.Data, code)
		}
		return answer{e.Code, e.Message, m.Header.Get("Retry-After")}
	}
	sendPB := func(r *troupev1.SendRequest) []byte { b, _ := proto.Marshal(r); return b }
	sendJSON := func(r *troupev1.SendRequest) []byte { b, _ := protojson.Marshal(r); return b }
	const sendPath = "/troupe.v1.CommandService/Send"

	type call func(t *testing.T) answer
	tests := []struct {
		name        string
		code        string
		mention     string // the message names this (a field, the problem)
		retryHint   bool
		http, grpc  call
		nats        call
		repeat      int // calls before the one checked (a burst)
		description string
	}{
		{
			name: "malformed JSON", code: "invalid_argument", mention: "request body",
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", []byte(`{"kind":`))
			},
			grpc: func(t *testing.T) answer { return grpcCall(t, sendPath, []byte{0xff, 0xff, 0xff}) },
			nats: func(t *testing.T) answer { return natsCall(t, "account", "a", []byte(`{"kind":`)) },
		},
		{
			name: "a field of the wrong type", code: "invalid_argument", mention: "type",
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", []byte(`{"kind":"account","id":"a","type":5}`))
			},
			nats: func(t *testing.T) answer { return natsCall(t, "account", "a", []byte(`{"type":5}`)) },
		},
		{
			name: "unknown kind", code: "invalid_argument", mention: `"dragon"`,
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", sendJSON(&troupev1.SendRequest{Kind: "dragon", Id: "a", Type: "Open"}))
			},
			grpc: func(t *testing.T) answer {
				return grpcCall(t, sendPath, sendPB(&troupev1.SendRequest{Kind: "dragon", Id: "a", Type: "Open"}))
			},
			nats: func(t *testing.T) answer { return natsCall(t, "dragon", "a", []byte(`{"type":"Open"}`)) },
		},
		{
			name: "unknown command", code: "invalid_argument", mention: `"Fly"`,
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", sendJSON(&troupev1.SendRequest{Kind: "account", Id: "a", Type: "Fly"}))
			},
			grpc: func(t *testing.T) answer {
				return grpcCall(t, sendPath, sendPB(&troupev1.SendRequest{Kind: "account", Id: "a", Type: "Fly"}))
			},
			nats: func(t *testing.T) answer { return natsCall(t, "account", "a", []byte(`{"type":"Fly"}`)) },
		},
		{
			name: "missing field", code: "invalid_argument", mention: `"type"`,
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", []byte(`{"kind":"account","id":"a"}`))
			},
			grpc: func(t *testing.T) answer {
				return grpcCall(t, sendPath, sendPB(&troupev1.SendRequest{Kind: "account", Id: "a"}))
			},
			nats: func(t *testing.T) answer { return natsCall(t, "account", "a", []byte(`{}`)) },
		},
		{
			name: "payload that does not decode", code: "invalid_argument", mention: `"amount"`,
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", []byte(`{"kind":"account","id":"a","type":"Deposit","payload":{"amount":"ten"}}`))
			},
			nats: func(t *testing.T) answer {
				return natsCall(t, "account", "a", []byte(`{"type":"Deposit","payload":{"amount":"ten"}}`))
			},
		},
		{
			name: "unknown top-level field is ignored everywhere", code: "ok",
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", []byte(`{"kind":"account","id":"u1","type":"Open","payload":{"owner":"x"},"future":1}`))
			},
			nats: func(t *testing.T) answer {
				return natsCall(t, "account", "u2", []byte(`{"type":"Open","payload":{"owner":"x"},"future":1}`))
			},
		},
		{
			name: "oversize body", code: "invalid_argument", mention: "larger than the limit of 4096 bytes",
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", bigSend(8000, true))
			},
			grpc: func(t *testing.T) answer { return grpcCall(t, sendPath, bigSend(8000, false)) },
			nats: func(t *testing.T) answer { return natsCall(t, "account", "a", bigSend(8000, true)) },
		},
		{
			name: "rate-limited burst", code: "resource_exhausted", mention: "rate limit exceeded", retryHint: true, repeat: 2,
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", sendJSON(&troupev1.SendRequest{Kind: "account", Id: "rl-http", Type: "Close"}))
			},
			grpc: func(t *testing.T) answer {
				return grpcCall(t, sendPath, sendPB(&troupev1.SendRequest{Kind: "account", Id: "rl-grpc", Type: "Close"}))
			},
			nats: func(t *testing.T) answer { return natsCall(t, "account", "rl-nats", []byte(`{"type":"Close"}`)) },
		},
		{
			name: "plugin timeout", code: "deadline_exceeded", mention: "plugin slow",
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", sendPath, "application/json", []byte(`{"kind":"account","id":"a","type":"Withdraw","payload":{"amount":1}}`))
			},
			grpc: func(t *testing.T) answer {
				return grpcCall(t, sendPath, sendPB(&troupev1.SendRequest{Kind: "account", Id: "a", Type: "Withdraw"}))
			},
			nats: func(t *testing.T) answer {
				return natsCall(t, "account", "a", []byte(`{"type":"Withdraw","payload":{"amount":1}}`))
			},
		},
		{
			name: "query params that do not decode", code: "invalid_argument", mention: `"after"`,
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", "/troupe.v1.QueryService/Query", "application/json", []byte(`{"name":"statement","params":{"id":"a","after":-1}}`))
			},
		},
		{
			name: "wrong content type", code: "invalid_argument", mention: "text/plain",
			http: func(t *testing.T) answer { return httpCall(t, "POST", sendPath, "text/plain", []byte(`hello`)) },
		},
		{
			name: "wrong method", code: "invalid_argument", mention: "GET",
			http: func(t *testing.T) answer { return httpCall(t, "GET", sendPath, "", nil) },
		},
		{
			name: "unknown path", code: "not_found", mention: "/troupe.v1.Nope/Send",
			http: func(t *testing.T) answer {
				return httpCall(t, "POST", "/troupe.v1.Nope/Send", "application/json", []byte(`{}`))
			},
			grpc: func(t *testing.T) answer { return grpcCall(t, "/troupe.v1.Nope/Send", nil) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, tr := range []struct {
				name string
				f    call
			}{{"http", tt.http}, {"grpc", tt.grpc}, {"nats", tt.nats}} {
				if tr.f == nil {
					continue
				}
				for range tt.repeat {
					tr.f(t)
				}
				got := tr.f(t)
				t.Logf("%s: %s %q retry-after %q", tr.name, got.code, got.message, got.retryAfter)
				if got.code != tt.code {
					t.Errorf("%s: code %s (%q), want %s", tr.name, got.code, got.message, tt.code)
					continue
				}
				if tt.code == "ok" {
					continue
				}
				if !strings.Contains(got.message, tt.mention) {
					t.Errorf("%s: message %q does not mention %q", tr.name, got.message, tt.mention)
				}
				for _, l := range leaks {
					if strings.Contains(got.message, l) {
						t.Errorf("%s: message %q shows internals (%q)", tr.name, got.message, l)
					}
				}
				if tt.retryHint && (got.retryAfter == "" || !strings.Contains(got.message, "retry after")) {
					t.Errorf("%s: no retry hint: header %q, message %q", tr.name, got.retryAfter, got.message)
				}
			}
		})
	}
}

// bigSend is a SendRequest of about size bytes, as JSON or protobuf.
func bigSend(size int, asJSON bool) []byte {
	r := &troupev1.SendRequest{Kind: "account", Id: "a", Type: "Open", IdempotencyKey: strings.Repeat("k", size)}
	if asJSON {
		b, _ := protojson.Marshal(r)
		return b
	}
	b, _ := proto.Marshal(r)
	return b
}
