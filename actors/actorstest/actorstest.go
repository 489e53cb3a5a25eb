// Package actorstest is the test kit for code written on package actors.
//
// Domain logic is tested without goroutines, given events, when a command,
// then events and a reply (or a rejection):
//
//	actorstest.Given(bank.Accounts, "acc-1", bank.Opened{}, bank.Deposited{Amount: 100}).
//		When(bank.Withdraw{Amount: 30}).
//		ThenEvents(t, bank.Withdrawn{Amount: 30}).
//		ThenReply(t, bank.Reply{Balance: 70})
//
// Integration tests run the real runtime in process, on Badger in a
// temporary directory, and can restart it on the same data:
//
//	n := actorstest.Start(t, actorstest.Config{Setup: bank.Register})
//	out, err := n.Send(ctx, "account", "acc-1", bank.Open{Owner: "ada"})
//	n = n.Restart(t)
package actorstest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore"
)

// Scenario is a given/when/then test of one kind's pure logic.
type Scenario[S any] struct {
	kind  *actors.Kind[S]
	state S
	err   error
}

// Given starts a scenario from the state an entity has after events.
func Given[S any](k *actors.Kind[S], id string, events ...any) *Scenario[S] {
	s, err := k.Apply(k.Initial(id), events...)
	return &Scenario[S]{kind: k, state: s, err: err}
}

// State is the state the given events produced.
func (s *Scenario[S]) State() S { return s.state }

// When runs a command's handler on the given state.
func (s *Scenario[S]) When(cmd any) *Then {
	if s.err != nil {
		return &Then{err: s.err}
	}
	d, err := s.kind.Decide(s.state, cmd)
	return &Then{d: d, err: err}
}

// Then holds a command's decision for assertions. Each method fails the
// test on a mismatch and returns the receiver, to chain.
type Then struct {
	d   actors.Decision
	err error
}

// Decision is the raw decision (events, reply, timers).
func (th *Then) Decision() (actors.Decision, error) { return th.d, th.err }

// ThenEvents asserts the command succeeded with exactly these events.
func (th *Then) ThenEvents(t testing.TB, events ...any) *Then {
	t.Helper()
	if th.err != nil {
		t.Fatalf("command failed: %v; want events %#v", th.err, events)
	}
	if len(events) == 0 && len(th.d.Events) == 0 {
		return th
	}
	if !reflect.DeepEqual(th.d.Events, events) {
		t.Fatalf("events %#v, want %#v", th.d.Events, events)
	}
	return th
}

// ThenReply asserts the command's reply.
func (th *Then) ThenReply(t testing.TB, reply any) *Then {
	t.Helper()
	if th.err != nil {
		t.Fatalf("command failed: %v; want reply %#v", th.err, reply)
	}
	if !reflect.DeepEqual(th.d.Reply, reply) {
		t.Fatalf("reply %#v, want %#v", th.d.Reply, reply)
	}
	return th
}

// ThenRejected asserts the command was rejected with a reason that
// contains reason.
func (th *Then) ThenRejected(t testing.TB, reason string) *Then {
	t.Helper()
	var rej *actors.RejectedError
	if !errors.As(th.err, &rej) {
		t.Fatalf("got %v (events %#v), want a rejection containing %q", th.err, th.d.Events, reason)
	}
	if !strings.Contains(rej.Reason, reason) {
		t.Fatalf("rejected with %q, want it to contain %q", rej.Reason, reason)
	}
	return th
}

// Config configures an in-process runtime.
type Config struct {
	// Dir holds the journal and the read store; default t.TempDir().
	Dir string
	// Setup registers the kinds, projections, queries and reactors.
	Setup func(rt *actors.Runtime) error
	// Runtime is passed to actors.NewRuntime (Journal and ReadStore are
	// filled in).
	Runtime actors.Config
	// Journal, when set, is the journal instead of a Badger one in Dir
	// (e.g. a journaltest.MemStore with several partitions, as a
	// cluster's log has). The test owns it: Close leaves it open, and
	// Restart runs on it again.
	Journal journal.Store
	// Durable makes the journal fsync every append (sync policy always).
	// Off by default: unsynced writes still survive the in-process
	// restarts tests do, and tests run faster.
	Durable bool
	// Logger; default discards.
	Logger *slog.Logger
}

// Node is a runtime on a real Badger journal and read store.
type Node struct {
	RT      *actors.Runtime
	Journal journal.Store
	Read    *actors.ReadStore
	cfg     Config
	closed  bool
}

// Start opens the stores, registers cfg.Setup and starts the runtime. The
// test's cleanup closes it.
func Start(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sync := badgerstore.SyncNone
	if cfg.Durable {
		sync = badgerstore.SyncAlways
	}
	j := cfg.Journal
	if j == nil {
		var err error
		if j, err = badgerstore.Open(badgerstore.Config{Dir: filepath.Join(cfg.Dir, "journal"), Sync: sync, Logger: cfg.Logger}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := actors.OpenReadStore(actors.ReadStoreConfig{Dir: filepath.Join(cfg.Dir, "read"), Logger: cfg.Logger})
	if err != nil {
		j.Close()
		t.Fatal(err)
	}
	rc := cfg.Runtime
	rc.Journal, rc.ReadStore = j, rs
	if rc.Logger == nil {
		rc.Logger = cfg.Logger
	}
	rt, err := actors.NewRuntime(rc)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{RT: rt, Journal: j, Read: rs, cfg: cfg}
	t.Cleanup(n.Close)
	if cfg.Setup != nil {
		if err := cfg.Setup(rt); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// Close stops the runtime and closes the stores. It is idempotent.
func (n *Node) Close() {
	if n.closed {
		return
	}
	n.closed = true
	n.RT.Close()
	n.Read.Close()
	if n.cfg.Journal == nil {
		n.Journal.Close()
	}
}

// Restart closes the node and starts a new one on the same data.
func (n *Node) Restart(t testing.TB) *Node {
	t.Helper()
	n.Close()
	return Start(t, n.cfg)
}

// Send sends a typed command to kind/id.
func (n *Node) Send(ctx context.Context, kind, id string, cmd any) (*actors.Outcome, error) {
	return n.SendKey(ctx, kind, id, "", cmd)
}

// SendKey sends a typed command with an idempotency key.
func (n *Node) SendKey(ctx context.Context, kind, id, key string, cmd any) (*actors.Outcome, error) {
	c, err := actors.NewCommand(kind, id, cmd)
	if err != nil {
		return nil, err
	}
	c.IdempotencyKey = key
	return n.RT.Send(ctx, c)
}

// Query runs a named query with params encoded as JSON, waiting for
// min (a command's Outcome.Token, or the zero token), and decodes the
// result into out (when non-nil).
func (n *Node) Query(ctx context.Context, name string, params any, min journal.Token, out any) (actors.Answer, error) {
	p, err := json.Marshal(params)
	if err != nil {
		return actors.Answer{}, err
	}
	ans, err := n.RT.Query(ctx, name, p, min)
	if err != nil || out == nil {
		return ans, err
	}
	b, err := json.Marshal(ans.Result)
	if err != nil {
		return ans, err
	}
	return ans, json.Unmarshal(b, out)
}

// Eventually polls cond every 5 ms until it holds, failing the test after
// bound.
func Eventually(t testing.TB, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", bound)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
