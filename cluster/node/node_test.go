package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/examples/bank"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testConfig(t *testing.T) Config {
	return Config{
		DataDir:  t.TempDir(),
		HTTPAddr: "127.0.0.1:0",
		NATSPort: -1,
		Setup:    bank.Register,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Generous: under the race detector, with a cold compilation cache,
	// compiling a 2.7 MB Go guest plugin alone takes 20-35 s on 2 cores.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNodeServesAPIAndStopsCleanly(t *testing.T) {
	cfg := testConfig(t)
	n := startNode(t, cfg)
	url := "http://" + n.HTTPAddr()

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if path == "/metrics" && !strings.Contains(string(body), "go_goroutines") {
			t.Fatalf("/metrics has no Go metrics:\n%.300s", body)
		}
	}

	ctx := context.Background()
	// gRPC over HTTP/2 without TLS, served by the same handler as JSON.
	c := troupev1connect.NewCommandServiceClient(&http.Client{Transport: h2cTransport()}, url, connect.WithGRPC())
	send := func(typ string, payload map[string]any) (*troupev1.SendResponse, error) {
		st, _ := structpb.NewStruct(payload)
		resp, err := c.Send(ctx, connect.NewRequest(&troupev1.SendRequest{Kind: "account", Id: "a1", Type: typ, Payload: st}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	if _, err := send("Open", nil); err != nil {
		t.Fatal(err)
	}
	r, err := send("Deposit", map[string]any{"amount": 42})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetPosition() != 2 || r.GetSequence() != 2 || r.GetReply().GetStructValue().GetFields()["balance"].GetNumberValue() != 42 {
		t.Fatalf("deposit response %v", r)
	}
	if _, err := send("Withdraw", map[string]any{"amount": 43}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("overdraw: %v", err)
	}

	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`troupe_commands_total{code="ok",kind="account"} 2`,
		`troupe_commands_total{code="failed_precondition",kind="account"} 1`,
		`troupe_command_duration_seconds_count{kind="account"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}

	q := troupev1connect.NewQueryServiceClient(&http.Client{Transport: h2cTransport()}, url, connect.WithGRPC())
	params, _ := structpb.NewStruct(map[string]any{"id": "a1"})
	ans, err := q.Query(ctx, connect.NewRequest(&troupev1.QueryRequest{Name: "balance", Params: params, MinPosition: r.GetToken()}))
	if err != nil {
		t.Fatal(err)
	}
	if ans.Msg.GetResult().GetNumberValue() != 42 || ans.Msg.GetPosition() < 2 || ans.Msg.GetToken() == "" || r.GetToken() == "" {
		t.Fatalf("query answer %v (command token %q)", ans.Msg, r.GetToken())
	}
	// A token that is not one is refused, naming the field.
	if _, err := q.Query(ctx, connect.NewRequest(&troupev1.QueryRequest{Name: "balance", Params: params, MinPosition: "nonsense"})); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "min_position") {
		t.Fatalf("bad token: %v", err)
	}

	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close after Shutdown: %v", err)
	}
	if err := n.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Shutdown = %v", err)
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("API still answers after Shutdown")
	}
}

func TestStartFailureStopsWhatStarted(t *testing.T) {
	cfg := testConfig(t)
	cfg.Setup = func(rt *actors.Runtime) error { return errors.New("domain refuses") }
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "domain refuses") {
		t.Fatalf("Start = %v", err)
	}
	// The journal was closed: a second node can open the same directory.
	n2 := startNode(t, Config{DataDir: cfg.DataDir, HTTPAddr: "127.0.0.1:0", NATSPort: -1, Logger: cfg.Logger})
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad http address", Config{HTTPAddr: "nohost"}, "http address"},
		{"bad sync", Config{Sync: 7}, `sync policy SyncPolicy(7)`},
		{"bad nats port", Config{NATSPort: 99999}, "nats port"},
		{"negative plugin budget", Config{PluginMemoryBudget: -1}, "plugin memory budget"},
		{"bad node id", Config{NodeID: "a b"}, `node id "a b"`},
		{"join without gossip", Config{Join: []string{"127.0.0.1:7946"}}, "--join needs --gossip"},
		{"bad gossip address", Config{Gossip: "nohost"}, `gossip address "nohost"`},
		{"bad seed", Config{Gossip: "127.0.0.1:7946", Join: []string{"x"}}, `seed "x"`},
		{"short gossip key", Config{Gossip: "127.0.0.1:7946", GossipKey: []byte("short")}, "gossip key of 5 bytes"},
		{"unknown role", Config{Gossip: "127.0.0.1:7946", Roles: []string{"boss"}}, `role "boss"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

// h2cTransport speaks HTTP/2 without TLS, as gRPC clients do on loopback.
func h2cTransport() *http.Transport {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: p}
}

// A taken NATS port fails Start at once, naming the port (the NATS server
// alone would only log it and wait out its readiness timeout).
func TestTakenNATSPortFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := testConfig(t)
	cfg.NATSHost, cfg.NATSPort = "127.0.0.1", port
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = n.Start(context.Background())
	if err == nil {
		n.Close()
		t.Fatal("started on a taken NATS port")
	}
	if took := time.Since(start); took > 3*time.Second || !strings.Contains(err.Error(), fmt.Sprintf("NATS port %d", port)) {
		t.Fatalf("after %v: %v, want an error naming NATS port %d at once", took, err, port)
	}
}
