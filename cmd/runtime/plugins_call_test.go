package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// troupe plugins call reaches an ambassador of a running node and prints
// its reply; errors follow the contract (code: message, exit 1).
func TestPluginsCall(t *testing.T) {
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer cli-token" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Request-Id", "req-cli")
		w.Write([]byte(`{"id":"ch_cli","status":"succeeded"}`))
	}))
	defer partner.Close()

	dir := t.TempDir()
	src := "../../wasm-examples/go/partner-api"
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", filepath.Join(dir, "partner-api.wasm"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build partner-api: %v\n%s", err, out)
	}
	man, err := os.ReadFile(filepath.Join(src, "partner-api.toml"))
	if err != nil {
		t.Fatal(err)
	}
	man = []byte(strings.ReplaceAll(string(man), "127.0.0.1:8089", strings.TrimPrefix(partner.URL, "http://")))
	if err := os.WriteFile(filepath.Join(dir, "partner-api.toml"), man, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PARTNER_API_TOKEN", "cli-token")
	p := startNode(t, t.TempDir(), "--plugins", dir)

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderrPart string
	}{
		{"reply", []string{"partner-api", "charge", `{"account":"acc-1","amount":100}`}, 0, `"charge_id":"ch_cli"`, ""},
		{"unknown ambassador", []string{"nope", "charge", `{}`}, 1, "", `troupe: not_found: no such plugin: ambassador "nope"`},
		{"plugin rejects", []string{"partner-api", "refund", `{}`}, 1, "", `troupe: failed_precondition: plugin partner-api rejected the call: unknown operation "refund"`},
		{"bad meta", []string{"partner-api", "charge", `{}`, "--meta", "novalue"}, 1, "", "want KEY=VALUE"},
		{"too few args", []string{"partner-api"}, 1, "", "accepts between 2 and 3 arg(s)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := cli(t, p.url, append([]string{"plugins", "call"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(stderr, tc.stderrPart) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, out, stderr, tc.code, tc.stdout, tc.stderrPart)
			}
		})
	}
}
