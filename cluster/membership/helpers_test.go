package membership

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakCheck fails the test if a goroutine outlives it. Register it first,
// so that it runs after every other cleanup (they run last-in first-out).
// goleak retries for a while, which covers serf's and memberlist's
// goroutines that end just after Shutdown returns.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// syncBuffer collects one node's logs; they are printed if the test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testNode is a started Membership with its logs and OnChange statistics.
type testNode struct {
	*Membership
	logs       *syncBuffer
	changes    atomic.Int64
	inOnChange atomic.Int32
	overlapped atomic.Bool // OnChange ran concurrently with itself
}

// newNode builds (but does not start) a node on 127.0.0.1 with a free
// port unless cfg says otherwise. Close runs at cleanup, and the node's
// logs are printed if the test failed.
func newNode(t *testing.T, cfg Config) (*testNode, error) {
	t.Helper()
	n := &testNode{logs: &syncBuffer{}}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "127.0.0.1:0"
	}
	cfg.Logger = slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).
		With("node", cfg.NodeID)
	user := cfg.OnChange
	cfg.OnChange = func() {
		if n.inOnChange.Add(1) > 1 {
			n.overlapped.Store(true)
		}
		n.changes.Add(1)
		if user != nil {
			user()
		}
		n.inOnChange.Add(-1)
	}
	m, err := New(cfg)
	if err != nil {
		return nil, err
	}
	n.Membership = m
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close %s: %v", cfg.NodeID, err)
		}
		if n.overlapped.Load() {
			t.Errorf("%s: OnChange ran concurrently with itself", cfg.NodeID)
		}
		if t.Failed() {
			t.Logf("logs of %s:\n%s", cfg.NodeID, n.logs.String())
		}
	})
	return n, nil
}

// startNode builds and starts a node; it fails the test on error.
func startNode(t *testing.T, cfg Config) *testNode {
	t.Helper()
	n, err := newNode(t, cfg)
	if err != nil {
		t.Fatalf("new %s: %v", cfg.NodeID, err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	return n
}

// formCluster starts one node per id, joins them all through the first
// and waits until every node sees every node alive.
func formCluster(t *testing.T, ids []string, mutate func(c *Config)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, len(ids))
	for i, id := range ids {
		cfg := Config{NodeID: id, Tags: map[string]string{"name": id}}
		if mutate != nil {
			mutate(&cfg)
		}
		nodes[i] = startNode(t, cfg)
		if i > 0 {
			joinOK(t, nodes[i], nodes[0].Addr())
		}
	}
	for _, n := range nodes {
		for _, id := range ids {
			waitState(t, n, id, 5*time.Second, Alive)
		}
	}
	return nodes
}

func joinOK(t *testing.T, n *testNode, seeds ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Join(ctx, seeds, 5); err != nil {
		t.Fatalf("%s joins %v: %v", n.cfg.NodeID, seeds, err)
	}
}

// memberOf returns n's view of id.
func memberOf(n *testNode, id string) (Member, bool) {
	for _, m := range n.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// eventually polls cond every 5 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitState waits until n sees id in one of the states.
func waitState(t *testing.T, n *testNode, id string, timeout time.Duration, states ...State) Member {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m, ok := memberOf(n, id)
		for _, s := range states {
			if ok && m.State == s {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s %s does not see %s in %v: found=%v state=%s addr=%s",
				timeout, n.cfg.NodeID, id, states, ok, m.State, m.Addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countID counts the entries for id in n's view (must be at most one).
func countID(n *testNode, id string) int {
	c := 0
	for _, m := range n.Members() {
		if m.ID == id {
			c++
		}
	}
	return c
}

// freeAddr returns a 127.0.0.1 address with a port nobody listens on
// (taken from the kernel, then released).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
