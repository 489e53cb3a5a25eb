package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// PluginService.Call reaches an ambassador through the node's plugin host
// and the node's error contract, over Connect and over plain HTTP JSON.
func TestPluginServiceCall(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("the go toolchain is needed to build wasm-examples/go/partner-api")
	}
	var calls atomic.Int32
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		var in struct {
			Amount int `json:"amount"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		if in.Amount > 1000 {
			w.WriteHeader(http.StatusPaymentRequired)
			w.Write([]byte(`{"error":"insufficient funds"}`))
			return
		}
		w.Header().Set("X-Request-Id", "req-9")
		w.Write([]byte(`{"id":"ch_9","status":"succeeded"}`))
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
	t.Setenv("PARTNER_API_TOKEN", "s3cret")

	cfg := testConfig(t)
	cfg.PluginDir = dir
	n := startNode(t, cfg)
	defer n.Close()
	base := "http://" + n.HTTPAddr()
	c := troupev1connect.NewPluginServiceClient(http.DefaultClient, base)
	ctx := context.Background()

	t.Run("reply", func(t *testing.T) {
		resp, err := c.Call(ctx, connect.NewRequest(&troupev1.CallRequest{
			Name: "partner-api", Operation: "charge", Payload: []byte(`{"account":"acc-1","amount":100}`),
		}))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			ChargeID string `json:"charge_id"`
			Status   string `json:"status"`
		}
		if err := json.Unmarshal(resp.Msg.GetPayload(), &out); err != nil || out.ChargeID != "ch_9" || out.Status != "succeeded" {
			t.Fatalf("payload %s (%v)", resp.Msg.GetPayload(), err)
		}
	})

	errCases := []struct {
		name string
		req  *troupev1.CallRequest
		code connect.Code
		msg  string
	}{
		{"unknown ambassador", &troupev1.CallRequest{Name: "nope", Operation: "charge"}, connect.CodeNotFound, `ambassador "nope"`},
		{"no name", &troupev1.CallRequest{Operation: "charge"}, connect.CodeInvalidArgument, "name:"},
		{"no operation", &troupev1.CallRequest{Name: "partner-api"}, connect.CodeInvalidArgument, "operation:"},
		{"plugin rejects", &troupev1.CallRequest{Name: "partner-api", Operation: "refund", Payload: []byte(`{}`)}, connect.CodeFailedPrecondition, `unknown operation "refund"`},
		{"partner refuses", &troupev1.CallRequest{Name: "partner-api", Operation: "charge", Payload: []byte(`{"account":"a","amount":5000}`)}, connect.CodeFailedPrecondition, "insufficient funds"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Call(ctx, connect.NewRequest(tc.req))
			var ce *connect.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a connect error", err)
			}
			if ce.Code() != tc.code || !strings.Contains(ce.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v containing %q", ce.Code(), ce.Message(), tc.code, tc.msg)
			}
		})
	}

	t.Run("http json", func(t *testing.T) {
		body := `{"name":"partner-api","operation":"charge","payload":"` +
			base64.StdEncoding.EncodeToString([]byte(`{"account":"acc-2","amount":7}`)) + `"}`
		resp, err := http.Post(base+"/troupe.v1.PluginService/Call", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out struct {
			Payload []byte `json:"payload"` // base64 in protojson
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || !strings.Contains(string(out.Payload), `"ch_9"`) {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}

		resp, err = http.Post(base+"/troupe.v1.PluginService/Call", "application/json", strings.NewReader(`{"name":"nope","operation":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ = io.ReadAll(resp.Body)
		var e struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if resp.StatusCode != http.StatusNotFound || json.Unmarshal(b, &e) != nil || e.Code != "not_found" || e.Message == "" {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	})
	if calls.Load() == 0 {
		t.Fatal("the partner was never called")
	}
}
