package actors_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// remotePlacement says that node owner owns every shard ("" = moving).
type remotePlacement struct{ owner string }

func (remotePlacement) NumShards() int { return actors.DefaultShards }
func (remotePlacement) ShardOf(kind, id string) int {
	return actors.ShardOf(kind, id, actors.DefaultShards)
}
func (p remotePlacement) Owner(int) (string, bool) { return p.owner, false }

// forwardTo forwards to another in-process runtime, as the cluster's
// forwarder does over NATS.
type forwardTo struct {
	rt    func() *actors.Runtime
	calls atomic.Int32
	ext   atomic.Bool
}

func (f *forwardTo) Forward(ctx context.Context, owner string, cmd *troupev1.Command, external bool) (*actors.Outcome, error) {
	f.calls.Add(1)
	f.ext.Store(external)
	return f.rt().SendForwarded(ctx, cmd, external)
}

func TestCommandsForAnotherNodesShardAreForwardedOnce(t *testing.T) {
	ctx := context.Background()
	var ownerIntercepts, senderIntercepts atomic.Int32
	owner := start(t, t.TempDir(), func(c *actors.Config) {
		c.Intercept = func(context.Context, *troupev1.Command) error { ownerIntercepts.Add(1); return nil }
	})
	fw := &forwardTo{rt: func() *actors.Runtime { return owner.RT }}
	sender := start(t, t.TempDir(), func(c *actors.Config) {
		c.Placement = remotePlacement{owner: "n2"}
		c.Forwarder = fw
		c.Intercept = func(context.Context, *troupev1.Command) error { senderIntercepts.Add(1); return nil }
	})

	cmd, err := actors.NewCommand("counter", "c1", Add{5})
	if err != nil {
		t.Fatal(err)
	}
	out, err := sender.RT.SendExternal(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if string(out.Reply) != "5" || out.Sequence != 1 {
		t.Fatalf("forwarded outcome %+v, reply %s; want reply 5 at sequence 1", out, out.Reply)
	}
	if fw.calls.Load() != 1 || !fw.ext.Load() {
		t.Fatalf("forward calls %d (external %v); want 1, external", fw.calls.Load(), fw.ext.Load())
	}
	// The sidecar chain runs once, on the node that received the command
	// (so that a retry towards a shard's new owner never runs it again).
	if ownerIntercepts.Load() != 0 || senderIntercepts.Load() != 1 {
		t.Fatalf("intercepts: owner %d, sender %d; want 0, 1", ownerIntercepts.Load(), senderIntercepts.Load())
	}
	// The events live on the owner's journal only.
	if info, _ := owner.Journal.Info(ctx, "counter/c1"); info.LastSequence != 1 {
		t.Fatalf("owner's stream at %d, want 1", info.LastSequence)
	}
	if info, _ := sender.Journal.Info(ctx, "counter/c1"); info.LastSequence != 0 {
		t.Fatalf("sender's journal has the stream at %d, want nothing", info.LastSequence)
	}
	// Trusted sends forward as trusted.
	if _, err := sender.RT.Send(ctx, cmd); err != nil || fw.ext.Load() {
		t.Fatalf("internal send: err %v, forwarded as external %v", err, fw.ext.Load())
	}
	// Bad commands are refused where they arrive, before any forward.
	bad := &troupev1.Command{Kind: "counter", EntityId: "c1", Type: "Nope", Payload: []byte("{}")}
	var unknown *actors.UnknownCommandError
	if _, err := sender.RT.SendExternal(ctx, bad); !errors.As(err, &unknown) || fw.calls.Load() != 2 {
		t.Fatalf("unknown command: %v after %d forwards; want *UnknownCommandError and no forward", err, fw.calls.Load())
	}
}

func TestCommandsForAShardNotOwnedHereFailWithNotOwner(t *testing.T) {
	ctx := context.Background()
	cmd, err := actors.NewCommand("counter", "c1", Add{1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, owner string
		forwarder   bool
		forwarded   bool
	}{
		{name: "no forwarder", owner: "n2"},
		{name: "shard moving, no forwarder", owner: ""},
		{name: "forwarded here, owned elsewhere", owner: "n3", forwarder: true, forwarded: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw := &forwardTo{rt: func() *actors.Runtime { t.Fatal("forwarded"); return nil }}
			n := start(t, t.TempDir(), func(c *actors.Config) {
				c.Placement = remotePlacement{owner: tc.owner}
				if tc.forwarder {
					c.Forwarder = fw
				}
			})
			send := n.RT.SendExternal
			if tc.forwarded {
				send = func(ctx context.Context, cmd *troupev1.Command) (*actors.Outcome, error) {
					return n.RT.SendForwarded(ctx, cmd, true)
				}
			}
			_, err := send(ctx, cmd)
			var no *actors.NotOwnerError
			if !errors.As(err, &no) || no.Owner != tc.owner || no.Kind != "counter" || no.ID != "c1" ||
				no.Shard != actors.ShardOf("counter", "c1", actors.DefaultShards) {
				t.Fatalf("got %v (%+v); want *NotOwnerError naming owner %q", err, no, tc.owner)
			}
			if info, _ := n.Journal.Info(ctx, "counter/c1"); info.LastSequence != 0 {
				t.Fatal("a command for a shard owned elsewhere was applied here")
			}
		})
	}
}

// lookups is a journal that counts idempotency look-ups and remembers
// what each keyed append said of its key.
type lookups struct {
	journal.Store
	mu      sync.Mutex
	looked  int
	appends []journal.AppendRequest
}

func (l *lookups) Idempotent(ctx context.Context, stream, key string) (journal.AppendResult, bool, error) {
	l.mu.Lock()
	l.looked++
	l.mu.Unlock()
	return l.Store.Idempotent(ctx, stream, key)
}

func (l *lookups) Append(ctx context.Context, req journal.AppendRequest) (journal.AppendResult, error) {
	if req.IdempotencyKey != "" {
		l.mu.Lock()
		l.appends = append(l.appends, req)
		l.mu.Unlock()
	}
	return l.Store.Append(ctx, req)
}

func (l *lookups) take() (int, []journal.AppendRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, a := l.looked, l.appends
	l.looked, l.appends = 0, nil
	return n, a
}

// A forwarded command whose key the sending node generated (key_unused)
// is not looked up, and its append says so to the journal; the same flag
// on a command that entered at this node (a client's, or code's) is
// ignored: its key is looked up, and a repeat is answered as a repeat.
func TestOnlyForwardedCommandsMayClaimAnUnusedKey(t *testing.T) {
	ctx := context.Background()
	j := &lookups{Store: journaltest.NewMemStore(journaltest.MemConfig{})}
	n := actorstest.Start(t, actorstest.Config{Dir: t.TempDir(), Journal: j, Setup: func(rt *actors.Runtime) error { return rt.Register(counterKind()) }})
	cmd, err := actors.NewCommand("counter", "c1", Add{1})
	if err != nil {
		t.Fatal(err)
	}
	cmd.IdempotencyKey, cmd.KeyUnused = "fwd-1", true
	out, err := n.RT.SendForwarded(ctx, cmd, true)
	if err != nil || out.Duplicate || out.Sequence != 1 {
		t.Fatalf("forwarded with an unused key: %+v, %v", out, err)
	}
	if looked, apps := j.take(); looked != 0 || len(apps) != 1 || !apps[0].KeyUnused {
		t.Fatalf("forwarded with an unused key: %d look-ups, appends %+v; want none, and one append with KeyUnused", looked, apps)
	}
	for name, send := range map[string]func(context.Context, *troupev1.Command) (*actors.Outcome, error){
		"external": n.RT.SendExternal, "internal": n.RT.Send,
	} {
		out, err := send(ctx, cmd) // the same key again, still claiming it unused
		if err != nil || !out.Duplicate || out.Sequence != 1 {
			t.Fatalf("%s repeat claiming an unused key: %+v, %v; want the first outcome as a repeat", name, out, err)
		}
		if looked, apps := j.take(); looked != 1 || len(apps) != 0 {
			t.Fatalf("%s repeat: %d look-ups, %d appends; want 1 and 0", name, looked, len(apps))
		}
	}
	cmd.IdempotencyKey = "client-2"
	if _, err := n.RT.SendExternal(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	if looked, apps := j.take(); looked != 1 || len(apps) != 1 || apps[0].KeyUnused {
		t.Fatalf("a new key entering here: %d look-ups, appends %+v; want 1, and an append without KeyUnused", looked, apps)
	}
	if c := get(t, n, "c1"); c.Value != 2 || c.Adds != 2 {
		t.Fatalf("counter %+v, want 2 adds of 1 (the repeats not applied)", c)
	}
}
