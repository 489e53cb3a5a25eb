package actors_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/troupe-dev/troupe/actors"
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
