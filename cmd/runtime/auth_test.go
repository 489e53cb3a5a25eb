package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The binary with --auth-tokens and TLS from `troupe certs dev-ca`: the
// CLI reaches it with --tls-ca and --token (or TROUPE_TOKEN), and each
// role gets what it may.
func TestCLIWithAuthAndTLS(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	var out, errb bytes.Buffer
	if code := run([]string{"certs", "dev-ca", certs}, &out, &errb); code != 0 {
		t.Fatalf("certs dev-ca: %d %s", code, errb.String())
	}
	if code := run([]string{"certs", "dev-ca", certs}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "not overwriting") {
		t.Fatalf("certs dev-ca over existing files: %d %s", code, errb.String())
	}
	const (
		reader = "cli-reader-0123456789abcdef"
		writer = "cli-writer-0123456789abcdef"
	)
	tokens := filepath.Join(dir, "tokens")
	writeTestFile(t, tokens, "reader "+reader+" dashboard\nwriter "+writer+" app\n")
	ca := filepath.Join(certs, "ca.pem")
	p := startNode(t, filepath.Join(dir, "data"), "--auth-tokens", tokens,
		"--tls-cert", filepath.Join(certs, "node.pem"), "--tls-key", filepath.Join(certs, "node-key.pem"), "--tls-ca", ca)
	url := strings.Replace(p.url, "http://", "https://", 1)

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string // in stdout (code 0) or stderr
	}{
		{"writer sends", []string{"send", "account/acc-1", "Open", `{"owner":"ada"}`, "--token", writer, "--tls-ca", ca}, 0, `{"balance":0}`},
		{"reader queries", []string{"query", "balance", `{"id":"acc-1"}`, "--token", reader, "--tls-ca", ca}, 0, "0"},
		{"reader cannot send", []string{"send", "account/acc-1", "Deposit", `{"amount":1}`, "--token", reader, "--tls-ca", ca}, 1,
			"troupe: permission_denied: permission denied: /troupe.v1.CommandService/Send needs the writer role"},
		{"writer cannot reload plugins", []string{"plugins", "reload", "--token", writer, "--tls-ca", ca}, 1, "needs the admin role"},
		{"no token", []string{"query", "balance", `{"id":"acc-1"}`, "--tls-ca", ca}, 1, "troupe: unauthenticated: missing or invalid bearer token"},
		{"no CA", []string{"query", "balance", `{"id":"acc-1"}`, "--token", reader}, 1, "certificate"},
		{"unreadable CA", []string{"query", "balance", `{"id":"acc-1"}`, "--token", reader, "--tls-ca", filepath.Join(dir, "nope.pem")}, 1, "--tls-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := cli(t, url, tt.args...)
			got := stdout
			if tt.wantCode != 0 {
				got = stderr
			}
			if code != tt.wantCode || !strings.Contains(got, tt.want) || (code == 0 && got != tt.want) {
				t.Fatalf("code %d, stdout %q, stderr %q; want code %d and %q", code, stdout, stderr, tt.wantCode, tt.want)
			}
		})
	}
	t.Run("TROUPE_TOKEN and TROUPE_TLS_CA", func(t *testing.T) {
		t.Setenv("TROUPE_TOKEN", writer)
		t.Setenv("TROUPE_TLS_CA", ca)
		if stdout, stderr, code := cli(t, url, "send", "account/acc-1", "Deposit", `{"amount":5}`); code != 0 {
			t.Fatalf("code %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
	t.Run("NATS over TLS", func(t *testing.T) {
		if !strings.HasPrefix(p.nats, "tls://") {
			t.Fatalf("NATS client URL %q, want tls://", p.nats)
		}
		// troupe publish as a writer goes through; the node's NATS
		// refuses a connection without a valid token.
		var stdout, stderr bytes.Buffer
		if code := run([]string{"publish", "orders.created", `{"id":1}`, "--nats", p.nats, "--token", writer, "--tls-ca", ca}, &stdout, &stderr); code != 0 {
			t.Fatalf("publish: code %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
		}
		if nc, err := nats.Connect(p.nats, nats.Token("wrong-token-0123456789abcdef"), nats.RootCAs(ca), nats.Timeout(5*time.Second)); err == nil {
			nc.Close()
			t.Fatal("NATS accepted a wrong token")
		}
	})
	t.Run("bench", func(t *testing.T) {
		for _, proto := range []string{"json", "grpc"} {
			var stdout, stderr bytes.Buffer
			code := run([]string{"bench", "--node", url, "--count", "40", "--entities", "4", "-c", "2", "--protocol", proto,
				"--mix", "deposit=1,balance=1", "--token", writer, "--tls-ca", ca}, &stdout, &stderr)
			if code != 0 || !strings.Contains(stdout.String(), " 0 errors") {
				t.Fatalf("bench over %s: code %d\n%s\n%s", proto, code, stdout.String(), stderr.String())
			}
		}
	})
	p.stop(15 * time.Second)
}

// A node whose token file is missing refuses to start, saying why.
func TestMissingTokenFileRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, troupeBin, "dev", "--data-dir", filepath.Join(dir, "data"), "--http", "127.0.0.1:0",
		"--nats-port", "-1", "--auth-tokens", filepath.Join(dir, "tokens")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to start without the tokens of --auth-tokens") ||
		!strings.Contains(string(out), "no such file or directory") {
		t.Fatalf("err %v, output:\n%s", err, out)
	}
}

func writeTestFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
