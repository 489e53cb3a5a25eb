package node

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// An actor-side call through the partner-api ambassador reaches the partner
// with the secret as credentials, is retried on a 5xx, and comes back mapped.
func TestAmbassadorCallFromTheRuntime(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go toolchain not found")
	}
	var calls atomic.Int32
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.URL.Path != "/v1/charges" || r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		if n == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable) // the plugin retries
			return
		}
		w.Header().Set("X-Request-Id", "req-7")
		w.Write([]byte(`{"id":"ch_1","status":"succeeded"}`))
	}))
	defer partner.Close()
	host := strings.TrimPrefix(partner.URL, "http://")

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
	man = []byte(strings.ReplaceAll(string(man), "127.0.0.1:8089", host))
	if err := os.WriteFile(filepath.Join(dir, "partner-api.toml"), man, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PARTNER_API_TOKEN", "s3cret")

	cfg := testConfig(t)
	cfg.PluginDir = dir
	n := startNode(t, cfg)
	defer n.Close()
	reply, err := n.Runtime().Call(context.Background(), "partner-api", &troupev1.AmbassadorCall{
		Operation: "charge", Payload: []byte(`{"account":"acc-1","amount":100}`), ContentType: "application/json",
	})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		ChargeID string `json:"charge_id"`
		Status   string `json:"status"`
		Attempts int    `json:"attempts"`
	}
	if err := json.Unmarshal(reply.GetPayload(), &out); err != nil || out.ChargeID != "ch_1" || out.Status != "succeeded" || out.Attempts != 2 {
		t.Fatalf("reply %s (%v)", reply.GetPayload(), err)
	}
	if calls.Load() != 2 {
		t.Fatalf("partner saw %d calls, want 2 (one retry)", calls.Load())
	}
}
