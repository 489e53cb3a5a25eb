package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/node"
)

// syncBuffer is a log sink the test reads while the node writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The binary's run, in process: a real node on free ports serves the order
// kind over HTTP with the error contract, the reactor ships a paid order,
// the subscriber sees it on NATS, and the node stops on cancel.
func TestQuickstartNode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--nats-port", "-1"}, logs,
			func(n *node.Node) { addr <- n.HTTPAddr() })
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("run: %v\n%s", err, logs)
	case <-time.After(time.Minute):
		t.Fatalf("the node did not start\n%s", logs)
	}

	post := func(method, body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(base+"/troupe.v1."+method, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s: %d %s", method, resp.StatusCode, b)
		}
		return resp.StatusCode, out
	}
	tests := []struct {
		name, method, body string
		status             int
		want               string // in the JSON body
	}{
		{"place", "CommandService/Send", `{"kind":"order","id":"o-1","type":"Place","payload":{"item":"book","qty":1}}`, 200, `"status":"placed"`},
		{"place again", "CommandService/Send", `{"kind":"order","id":"o-1","type":"Place","payload":{"item":"book","qty":1}}`, 400, `"code":"failed_precondition"`},
		{"pay an unknown order", "CommandService/Send", `{"kind":"order","id":"o-9","type":"Pay"}`, 404, `"code":"not_found"`},
		{"ship from outside", "CommandService/Send", `{"kind":"order","id":"o-1","type":"Ship"}`, 403, `"code":"permission_denied"`},
		{"bad payload", "CommandService/Send", `{"kind":"order","id":"o-2","type":"Place","payload":{"qty":"one"}}`, 400, `"code":"invalid_argument"`},
		{"pay", "CommandService/Send", `{"kind":"order","id":"o-1","type":"Pay"}`, 200, `"status":"paid"`},
		{"bad query", "QueryService/Query", `{"name":"order","params":{}}`, 400, `"code":"invalid_argument"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, out := post(tc.method, tc.body)
			b, _ := json.Marshal(out)
			if status != tc.status || !strings.Contains(string(b), tc.want) {
				t.Fatalf("%d %s, want %d with %s", status, b, tc.status, tc.want)
			}
		})
	}

	// The reactor ships o-1; the subscriber sees the Shipped event on NATS.
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), `msg="order shipped" order=o-1`) {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber never saw o-1 ship\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond) // polling the log, bounded above
	}
	// The read model is eventually consistent: the published event can
	// reach the subscriber before the orders projection applied it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		status, out := post("QueryService/Query", `{"name":"order","params":{"id":"o-1"}}`)
		b, _ := json.Marshal(out)
		if status == 200 && strings.Contains(string(b), `"status":"shipped"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("query: %d %s", status, b)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stop: %v\n%s", err, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop")
	}
}
