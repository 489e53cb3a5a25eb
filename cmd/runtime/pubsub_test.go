package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// natsCLI finds the standard `nats` client (github.com/nats-io/natscli),
// which `make tools` installs into .bin.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := filepath.Abs("../../.bin/nats"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	t.Skip("the nats CLI is not installed: run `make tools` (it installs github.com/nats-io/natscli into .bin)")
	return ""
}

// An external NATS client sees committed events in commit order, and can
// command entities by request.
func TestExternalNATSClient(t *testing.T) {
	natsBin := natsCLI(t)
	p := startNode(t, t.TempDir())
	if p.nats == "" {
		t.Fatal("the node logged no NATS URL")
	}

	// `nats sub` for the account events (and a probe subject, to know when
	// it is subscribed: it prints nothing until a message arrives).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := exec.CommandContext(ctx, natsBin, "--server", p.nats, "sub", "troupe.events.account.>", "probe.ready", "--raw")
	stdout, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Process.Kill(); _ = sub.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				lines <- l
			}
		}
		close(lines)
	}()
	nc, err := nats.Connect(p.nats)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitFor(t, 10*time.Second, func() bool {
		_ = nc.Publish("probe.ready", []byte("probe"))
		_ = nc.Flush()
		select {
		case l := <-lines:
			return l == "probe"
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})

	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Open","payload":{"owner":"ada"}}`)
	for i := 1; i <= 3; i++ {
		send(t, p.url, fmt.Sprintf(`{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":%d}}`, i))
	}
	// A command by NATS request, the same JSON the HTTP API takes.
	out, err := exec.Command(natsBin, "--server", p.nats, "request", "troupe.cmd.account.acc-1", `{"type":"Withdraw","payload":{"amount":2}}`, "--raw").CombinedOutput()
	if err != nil {
		t.Fatalf("nats request: %v\n%s", err, out)
	}
	var resp struct {
		Reply  map[string]any `json:"reply"`
		Events []string       `json:"events"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &resp); err != nil || resp.Reply["balance"] != 4.0 || len(resp.Events) != 1 || resp.Events[0] != "Withdrawn" {
		t.Fatalf("nats request answered %q (%v)", out, err)
	}
	// A rejected command by request gets the API's error.
	out, _ = exec.Command(natsBin, "--server", p.nats, "request", "troupe.cmd.account.acc-1", `{"type":"Withdraw","payload":{"amount":99}}`, "--raw").CombinedOutput()
	if !strings.Contains(string(out), `"code":"failed_precondition"`) || !strings.Contains(string(out), "insufficient funds: balance 4, withdrawal 99") {
		t.Fatalf("rejected request answered %q", out)
	}
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":10}}`)

	var got []string
	for len(got) < 6 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("nats sub ended after %v", got)
			}
			if l != "probe" {
				got = append(got, l)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("nats sub saw only %v", got)
		}
	}
	want := []string{`{"owner":"ada"}`, `{"amount":1}`, `{"amount":2}`, `{"amount":3}`, `{"amount":2}`, `{"amount":10}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("nats sub saw, in order:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	p.stop(10 * time.Second)
}

func TestPublishAndSubscribeCommands(t *testing.T) {
	p := startNode(t, t.TempDir())
	done := make(chan struct{})
	var stdout, stderr string
	var code int
	go func() {
		defer close(done)
		stdout, stderr, code = cliNATS(p.nats, "subscribe", "greetings.*", "--count", "1", "--timeout", "20s")
	}()
	// Publish until the subscriber (which prints nothing before) has it.
	waitFor(t, 15*time.Second, func() bool {
		out, errOut, c := cliNATS(p.nats, "publish", "greetings.en", "hello")
		if c != 0 || !strings.Contains(out, "published 5 bytes to greetings.en") {
			t.Fatalf("publish: %d %q %q", c, out, errOut)
		}
		select {
		case <-done:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	if code != 0 || stdout != "[greetings.en] hello" {
		t.Fatalf("subscribe: %d %q %q", code, stdout, stderr)
	}
	for _, bad := range [][]string{{"publish", "a..b", "x"}, {"publish", "a.*", "x"}, {"subscribe", "a.>.b"}} {
		if _, errOut, c := cliNATS(p.nats, bad...); c == 0 || !strings.Contains(errOut, "invalid topic") {
			t.Fatalf("%v: %d %q", bad, c, errOut)
		}
	}
	if _, errOut, c := cliNATS(p.nats, "publish", "big", strings.Repeat("x", 2<<20)); c == 0 || !strings.Contains(errOut, "over the maximum payload") {
		t.Fatalf("oversized publish: %d %q", c, errOut)
	}
	p.stop(10 * time.Second)
}

func cliNATS(url string, args ...string) (string, string, int) {
	var so, se strings.Builder
	code := run(append(args, "--nats", url), &so, &se)
	return strings.TrimSpace(so.String()), strings.TrimSpace(se.String()), code
}

func TestNATSNkeyAuthentication(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startNode(t, t.TempDir(), "--nats-nkey", pub)
	if _, errOut, c := cliNATS(p.nats, "publish", "a.b", "x"); c == 0 || !strings.Contains(strings.ToLower(errOut), "authorization") {
		t.Fatalf("publish without a key: %d %q", c, errOut)
	}
	if out, errOut, c := cliNATS(p.nats, "publish", "a.b", "x", "--nats-nkey-seed", seedFile); c != 0 || !strings.Contains(out, "published") {
		t.Fatalf("publish with the key: %d %q %q", c, out, errOut)
	}
	// The node itself still works (its in-process connection has its own key).
	send(t, p.url, `{"kind":"account","id":"n1","type":"Open","payload":{}}`)
	p.stop(10 * time.Second)
}
