package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/clustertest"
)

// troupeBin is the binary under test: TROUPE_BIN's, or built once by
// TestMain from this tree.
var troupeBin string

func TestMain(m *testing.M) {
	if p := os.Getenv(clustertest.BinaryEnv); p != "" {
		// A prebuilt binary (A/B runs of two builds, docs/testing.md):
		// every test here runs it, the cluster tests' nodes included.
		abs, err := filepath.Abs(p)
		if err == nil {
			var fi os.FileInfo
			if fi, err = os.Stat(abs); err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
				err = errors.New("not an executable file")
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s=%s: %v\n", clustertest.BinaryEnv, p, err)
			os.Exit(1)
		}
		troupeBin = abs
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "troupe-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	troupeBin = filepath.Join(dir, "troupe")
	out, err := exec.Command("go", "build", "-o", troupeBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build troupe: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `troupe dev` child process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	nats   string // the node's NATS client URL
	logs   *syncBuffer
	exited chan error
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

var readyRE = regexp.MustCompile(`msg="node ready" .*http=([0-9.:]+) nats=(\S*)`)

// startNode starts the binary on free ports with its data in dataDir and
// waits until it logs that it is ready.
func startNode(t *testing.T, dataDir string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"dev", "--data-dir", dataDir, "--http", "127.0.0.1:0", "--nats-port", "-1"}, extra...)
	cmd := exec.Command(troupeBin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, logs: &syncBuffer{mu: make(chan struct{}, 1)}, exited: make(chan error, 1)}
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			if m := readyRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1:]:
				default:
				}
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case addrs := <-found:
		p.url, p.nats = "http://"+addrs[0], addrs[1]
	case err := <-p.exited:
		t.Fatalf("node exited before ready: %v\n%s", err, p.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("node not ready after 30s\n%s", p.logs)
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit within bound.
func (p *proc) stop(bound time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			p.t.Fatalf("node exited with %v after SIGTERM\n%s", err, p.logs)
		}
	case <-time.After(bound):
		p.t.Fatalf("node still running %s after SIGTERM\n%s", bound, p.logs)
	}
	return time.Since(start)
}

// post sends a JSON body to a Connect method and decodes the JSON answer.
func post(t *testing.T, url, method, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url+"/troupe.v1."+method, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: answer %q is not JSON: %v", method, body, b, err)
	}
	return resp.StatusCode, out
}

func send(t *testing.T, url, body string) map[string]any {
	t.Helper()
	code, out := post(t, url, "CommandService/Send", body)
	if code != 200 {
		t.Fatalf("send %s: %d %v", body, code, out)
	}
	return out
}

// cli runs the troupe CLI in-process against a node.
func cli(t *testing.T, url string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append(args, "--node", url), &stdout, &stderr)
	return strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()), code
}

func TestBankFlowSurvivesRestart(t *testing.T) {
	data := t.TempDir()
	p := startNode(t, data)

	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Open","payload":{"owner":"ada"}}`)
	if out := send(t, p.url, `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":100}}`); out["reply"].(map[string]any)["balance"] != 100.0 {
		t.Fatalf("deposit reply %v", out)
	}
	// The CLI, as a user would type it.
	stdout, stderr, code := cli(t, p.url, "send", "account/acc-1", "Withdraw", `{"amount":30}`)
	if code != 0 || stdout != `{"balance":70}` {
		t.Fatalf("troupe send: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	stdout, stderr, code = cli(t, p.url, "send", "-v", "account/acc-1", `{"type":"Deposit","amount":5}`)
	if code != 0 {
		t.Fatalf("troupe send: code %d, stderr %q", code, stderr)
	}
	var sent struct {
		Position string `json:"position"`
	}
	if err := json.Unmarshal([]byte(stdout), &sent); err != nil || sent.Position == "" {
		t.Fatalf("send -v printed %q (%v)", stdout, err)
	}
	stdout, _, code = cli(t, p.url, "send", "account/acc-1", "Withdraw", `{"amount":5}`)
	if code != 0 || stdout != `{"balance":70}` {
		t.Fatalf("withdraw 5: %d %q", code, stdout)
	}
	// Read your write: the query waits for the projection to reach the
	// position of the last command.
	last := send(t, p.url, `{"kind":"account","id":"acc-2","type":"Open","payload":{}}`)
	code, q := post(t, p.url, "QueryService/Query", fmt.Sprintf(`{"name":"balance","params":{"id":"acc-1"},"minPosition":%q}`, last["position"]))
	if code != 200 || q["result"] != 70.0 {
		t.Fatalf("balance query: %d %v", code, q)
	}
	stdout, stderr, code = cli(t, p.url, "query", "balance", `{"id":"acc-1"}`, "--min-position", last["position"].(string))
	if code != 0 || stdout != "70" {
		t.Fatalf("troupe query: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	if took := p.stop(10 * time.Second); took > 10*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	if !strings.Contains(p.logs.String(), "node stopped") {
		t.Fatalf("no clean stop in the logs:\n%s", p.logs)
	}

	p = startNode(t, data)
	stdout, stderr, code = cli(t, p.url, "query", "balance", `{"id":"acc-1"}`, "--min-position", last["position"].(string))
	if code != 0 || stdout != "70" {
		t.Fatalf("after restart: code %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// The entity recovered its state from the journal, not just the read model.
	code, out := post(t, p.url, "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Withdraw","payload":{"amount":71}}`)
	if code != 400 || !strings.Contains(out["message"].(string), "insufficient funds: balance 70, withdrawal 71") {
		t.Fatalf("overdraw after restart: %d %v", code, out)
	}
	p.stop(10 * time.Second)
}

func TestBadInputGetsClearErrors(t *testing.T) {
	p := startNode(t, t.TempDir(), "--max-request-bytes", "4096")
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Open","payload":{}}`)
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":100}}`)
	send(t, p.url, `{"kind":"account","id":"acc-gone","type":"Open","payload":{}}`)
	send(t, p.url, `{"kind":"account","id":"acc-gone","type":"Close","payload":{}}`)

	tests := []struct {
		name     string
		method   string
		body     string
		status   int
		code     string
		contains string
	}{
		{"malformed json", "CommandService/Send", `{"kind":"account",`, 400, "invalid_argument", "request body ends too early"},
		{"unknown kind", "CommandService/Send", `{"kind":"dragon","id":"d1","type":"Open"}`, 400, "invalid_argument", `unknown entity kind "dragon"`},
		{"missing id", "CommandService/Send", `{"kind":"account","type":"Open"}`, 400, "invalid_argument", `missing "id"`},
		{"missing type", "CommandService/Send", `{"kind":"account","id":"acc-1"}`, 400, "invalid_argument", `missing "type"`},
		{"unknown command", "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Steal"}`, 400, "invalid_argument", `no command "Steal"`},
		{"payload does not decode", "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":"lots"}}`, 400, "invalid_argument", `payload: field "amount": want a whole number, got a string`},
		{"unknown payload field", "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amuont":5}}`, 400, "invalid_argument", `unknown field "amuont"`},
		{"overdraw", "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Withdraw","payload":{"amount":500}}`, 400, "failed_precondition", "insufficient funds: balance 100, withdrawal 500"},
		{"internal command", "CommandService/Send", `{"kind":"transfer","id":"t1","type":"MarkDebited","payload":{}}`, 403, "permission_denied", `command "MarkDebited" of kind "transfer" is internal`},
		{"closed account", "CommandService/Send", `{"kind":"account","id":"acc-gone","type":"Deposit","payload":{"amount":5}}`, 400, "failed_precondition", "account acc-gone is closed"},
		{"oversized body", "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"pad":"` + strings.Repeat("x", 8192) + `"}}`, 413, "invalid_argument", "request body is larger than the limit of 4096 bytes"},
		{"unknown query", "QueryService/Query", `{"name":"nope"}`, 400, "invalid_argument", `unknown query "nope"`},
		{"query without id", "QueryService/Query", `{"name":"balance","params":{}}`, 400, "invalid_argument", `missing "id"`},
		{"query unknown account", "QueryService/Query", `{"name":"balance","params":{"id":"zzz"}}`, 404, "not_found", `account "zzz" not found`},
		{"position that never arrives", "QueryService/Query", `{"name":"balance","params":{"id":"acc-1"},"minPosition":"999999","timeoutMs":200}`, 400, "out_of_range", "position 999999 does not exist yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := post(t, p.url, tt.method, tt.body)
			msg, _ := out["message"].(string)
			if status != tt.status || out["code"] != tt.code || !strings.Contains(msg, tt.contains) {
				t.Fatalf("got %d %v, want %d %s containing %q", status, out, tt.status, tt.code, tt.contains)
			}
		})
	}
	// Nothing above changed the account.
	status, q := post(t, p.url, "QueryService/Query", `{"name":"balance","params":{"id":"acc-1"},"minPosition":"2"}`)
	if status != 200 || q["result"] != 100.0 {
		t.Fatalf("balance after bad input: %d %v", status, q)
	}
	// The node is still healthy.
	resp, err := http.Get(p.url + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	p.stop(10 * time.Second)
}
