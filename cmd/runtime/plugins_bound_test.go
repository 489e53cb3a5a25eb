package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// wasmFixture assembles plugins/testdata/NAME.wat into dir/NAME.wasm.
func wasmFixture(t *testing.T, dir, name string) {
	t.Helper()
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm (wabt) not installed; run `make toolchains`")
	}
	if b, err := exec.Command(tool, "../../plugins/testdata/"+name+".wat", "-o", filepath.Join(dir, name+".wasm")).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm %s: %v\n%s", name, err, b)
	}
}

func writeManifest(t *testing.T, dir, name, manifest string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name+".toml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTrustedLoopingPluginCannotFreezeTheNode is the repro through
// the real binary: a trusted sidecar that allows the load probe and loops
// on one command type (Withdraw). With 1, 2 (as many as cores here) or 8 such
// commands in flight, /healthz and commands to other entities keep
// answering, the looping commands fail with a timeout naming the plugin,
// and SIGTERM, sent while they loop, stops the node within its bound.
func TestTrustedLoopingPluginCannotFreezeTheNode(t *testing.T) {
	plugins := t.TempDir()
	wasmFixture(t, plugins, "loop")
	writeManifest(t, plugins, "loop", "name = \"loop\"\ntrusted = true\n[hooks]\nkinds = [\"account\"]\ncommands = [\"Withdraw\"]\n")
	client := &http.Client{Timeout: 30 * time.Second}
	for _, n := range []int{1, 2, 8} {
		t.Run(fmt.Sprintf("%d-calls", n), func(t *testing.T) {
			p := startNode(t, t.TempDir(), "--plugins", plugins)
			send(t, p.url, `{"kind":"account","id":"stuck","type":"Open","payload":{}}`)
			send(t, p.url, `{"kind":"account","id":"stuck","type":"Deposit","payload":{"amount":100}}`)
			var wg sync.WaitGroup
			answers := make(chan string, n)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := client.Post(p.url+"/troupe.v1.CommandService/Send", "application/json",
						strings.NewReader(`{"kind":"account","id":"stuck","type":"Withdraw","payload":{"amount":1}}`))
					if err != nil {
						answers <- "error: " + err.Error()
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					answers <- fmt.Sprintf("%d %s", resp.StatusCode, b)
				}()
			}
			waitFor(t, 10*time.Second, func() bool {
				return strings.Contains(metricsText(t, p.url), `troupe_plugin_calls_total{hook="command",plugin="loop"} `)
			})
			// While the calls loop: health and other entities answer.
			quick := &http.Client{Timeout: time.Second}
			start := time.Now()
			resp, err := quick.Get(p.url + "/healthz")
			if err != nil {
				t.Fatalf("/healthz while %d calls loop: %v", n, err)
			}
			resp.Body.Close()
			resp, err = quick.Post(p.url+"/troupe.v1.CommandService/Send", "application/json",
				strings.NewReader(`{"kind":"account","id":"other","type":"Open","payload":{}}`))
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("an unrelated command while %d calls loop: %v %v", n, resp, err)
			}
			resp.Body.Close()
			t.Logf("health and an unrelated command answered in %v while %d calls looped", time.Since(start), n)
			if len(answers) == n {
				t.Fatal("the looping calls ended before the checks: the test proves nothing")
			}
			// SIGTERM while they loop: the node stops within its bound.
			took := p.stop(15 * time.Second)
			t.Logf("SIGTERM with %d looping calls: exited after %v", n, took)
			wg.Wait()
			close(answers)
			for a := range answers {
				// Each looping call ends by its 1 s bound (or the node
				// closing its connection); a reply names the plugin.
				if strings.HasPrefix(a, "error:") {
					continue
				}
				if !strings.Contains(a, `"code":"deadline_exceeded","message":"plugin loop did not decide in time (deadline exceeded: call `) {
					t.Errorf("a looping command answered %s", a)
				}
			}
		})
	}
}

func metricsText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestSendRetriesADeadlineExactlyOnce: a command answered with
// deadline_exceeded is retried by `troupe send` with the same idempotency
// key and applied exactly once. The slow path is honest: a sidecar that
// makes every command with an idempotency key wait in a host call (the
// clock capability's sleep) until a time the test sets, a second ahead,
// longer than --timeout; attempts after that time pass at once.
func TestSendRetriesADeadlineExactlyOnce(t *testing.T) {
	plugins := t.TempDir()
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-buildmode=c-shared", "-o", filepath.Join(plugins, "slow.wasm"), ".")
	build.Dir = "../../plugins/testdata/goslow"
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build goslow: %v\n%s", err, b)
	}
	// slowFor (re)writes the manifest so that keyed commands wait until
	// about d from when the node has loaded that version (at least d/2):
	// loading a Go module takes long under the race detector, so a version
	// loaded too late for its window is written again with the load time
	// added.
	var p *proc
	slowFor := func(d time.Duration) {
		t.Helper()
		var extra time.Duration
		for try := 0; ; try++ {
			start := time.Now()
			until := start.Add(d + extra)
			manifest := fmt.Sprintf("name = \"slow\"\ntrusted = true\n[hooks]\nkinds = [\"account\"]\ncommands = [\"Deposit\"]\n"+
				"[limits]\nmemory_pages = 256\ntimeout = \"5s\"\n[capabilities]\nclock = true\n[capabilities.config]\nslow_until = \"%d\"\n",
				until.UnixMilli())
			var before string
			if p != nil {
				before = pluginRow(t, p.url, "slow")[1]
			}
			tmp := filepath.Join(plugins, ".slow.toml.tmp")
			if err := os.WriteFile(tmp, []byte(manifest), 0o644); err != nil { // then renamed in: the watcher reads it whole
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(plugins, "slow.toml")); err != nil {
				t.Fatal(err)
			}
			if p == nil {
				return // the node loads it when it starts
			}
			waitFor(t, 10*time.Second, func() bool { return pluginRow(t, p.url, "slow")[1] != before })
			if left := time.Until(until); left >= d/2 {
				return
			} else if try == 4 {
				t.Fatalf("the slow plugin's version loaded with %v of its %v window left, 5 times", left, d+extra)
			}
			extra = time.Since(start)
			t.Logf("the slow plugin's version took %v to load: written again with a longer window", extra)
		}
	}
	slowFor(0)
	p = startNode(t, t.TempDir(), "--plugins", plugins)
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Open","payload":{}}`)
	balance := 0.0
	check := func() {
		t.Helper()
		// A deposit of 1 without a key: the plugin lets it through at once.
		balance++
		out := send(t, p.url, `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":1}}`)
		if got := out["reply"].(map[string]any)["balance"].(float64); got != balance {
			t.Fatalf("balance %v, want %v", got, balance)
		}
	}

	slowFor(time.Second)
	stdout, stderr, code := cli(t, p.url, "send", "--timeout", "400ms", "account/acc-1", "Deposit", `{"amount":10}`)
	if code != 0 {
		t.Fatalf("troupe send: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	t.Logf("troupe send:\n%s\n%s", stderr, stdout)
	if !strings.Contains(stderr, "troupe: deadline_exceeded: ") || !strings.Contains(stderr, "retrying in") {
		t.Fatalf("no deadline was retried; stderr:\n%s", stderr)
	}
	keys := regexp.MustCompile(`idempotency key (send-[0-9a-f]+)`).FindAllStringSubmatch(stderr, -1)
	for _, k := range keys[1:] {
		if k[1] != keys[0][1] {
			t.Fatalf("the retries used different keys:\n%s", stderr)
		}
	}
	balance += 10
	check()
	// The key is what makes a retry safe: the same key again is a duplicate.
	code, out := post(t, p.url, "CommandService/Send", fmt.Sprintf(`{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":10},"idempotencyKey":%q}`, keys[0][1]))
	if code != 200 || out["duplicate"] != true {
		t.Fatalf("the same key again: %d %v, want a duplicate", code, out)
	}
	check()

	// Without retries, the outcome is said, with the key to retry: unknown
	// when the CLI's deadline struck first, not applied when the node's
	// answer (the sidecar ran out of the request's time) came first.
	slowFor(time.Second)
	_, stderr, code = cli(t, p.url, "send", "--timeout", "400ms", "--retries", "0", "account/acc-1", "Deposit", `{"amount":5}`)
	m := regexp.MustCompile(`(?:may or may not have been applied: send it again with --idempotency-key|the command was not applied: send it again \(none of 1 attempts applied it; sent again with --idempotency-key) (send-[0-9a-f]+)`).FindStringSubmatch(stderr)
	if code == 0 || m == nil {
		t.Fatalf("--retries 0: exit %d, stderr %s", code, stderr)
	}
	waitFor(t, 10*time.Second, func() bool {
		_, _, code := cli(t, p.url, "send", "--timeout", "3s", "--idempotency-key", m[1], "account/acc-1", "Deposit", `{"amount":5}`)
		return code == 0
	})
	balance += 5
	check()
	// The API's own deadline error says that the outcome is unknown.
	slowFor(time.Second)
	req, _ := http.NewRequest("POST", p.url+"/troupe.v1.CommandService/Send",
		strings.NewReader(`{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":7},"idempotencyKey":"raw-1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Timeout-Ms", "300") // the node's deadline for this request
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The deadline ends the sidecar's wait (the plugin is bounded by the
	// request's deadline too): the answer says the command was not applied;
	// had the deadline struck after the sidecar, it would say the outcome
	// is unknown. Either way the same key applies it exactly once below.
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(b), `"code":"deadline_exceeded"`) ||
		!(strings.Contains(string(b), "unknown outcome: the command may or may not have been applied; send it again with the same idempotency key") ||
			strings.Contains(string(b), "did not decide in time") && strings.Contains(string(b), "the command was not applied: send it again")) {
		t.Fatalf("a command past the node's deadline: %d %s", resp.StatusCode, b)
	}
	waitFor(t, 10*time.Second, func() bool {
		code, _ := post(t, p.url, "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":7},"idempotencyKey":"raw-1"}`)
		return code == 200
	})
	balance += 7
	check()
	// --no-idempotency-key sends no key: nothing waits, nothing retries.
	slowFor(time.Hour)
	if _, stderr, code := cli(t, p.url, "send", "--no-idempotency-key", "--timeout", "3s", "account/acc-1", "Deposit", `{"amount":1}`); code != 0 {
		t.Fatalf("--no-idempotency-key: %d %s", code, stderr)
	}
	balance++
	check()
	p.stop(15 * time.Second)
}

// TestUnsupportedContentEncodingIs4xx: a body in an encoding the API does
// not decode gets 415 with the JSON error body, not 501.
func TestUnsupportedContentEncodingIs4xx(t *testing.T) {
	p := startNode(t, t.TempDir())
	for _, h := range []string{"Content-Encoding", "Connect-Content-Encoding"} {
		req, _ := http.NewRequest("POST", p.url+"/troupe.v1.CommandService/Send", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(h, "br")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body struct{ Code, Message string }
		if err := json.Unmarshal(b, &body); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType ||
			body.Code != "invalid_argument" || !strings.Contains(body.Message, `"br" is not supported`) ||
			resp.Header.Get("Accept-Encoding") != "identity, gzip" {
			t.Fatalf("%s: br: %d %s %v", h, resp.StatusCode, b, resp.Header)
		}
	}
	// gzip still works.
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte(`{"kind":"account","id":"acc-1","type":"Open","payload":{}}`))
	zw.Close()
	req, _ := http.NewRequest("POST", p.url+"/troupe.v1.CommandService/Send", &zb)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("gzip: %d %s", resp.StatusCode, b)
	}
	p.stop(15 * time.Second)
}
