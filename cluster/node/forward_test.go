package node

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// fakeOwner answers forwards on shard 0's subject with answers, in
// order (the last one again once they run out), and keeps what it got.
type fakeOwner struct {
	mu      sync.Mutex
	n       int // forwards answered
	got     []*troupev1.Forward
	answers []*troupev1.ForwardReply
}

func (o *fakeOwner) handle(m *nats.Msg) {
	var fw troupev1.Forward
	if err := proto.Unmarshal(m.Data, &fw); err != nil {
		return
	}
	o.mu.Lock()
	o.got = append(o.got, &fw)
	o.n++
	r := o.answers[min(o.n, len(o.answers))-1]
	o.mu.Unlock()
	b, _ := proto.Marshal(r)
	_ = m.Respond(b)
}

func (o *fakeOwner) take() []*troupev1.Forward {
	o.mu.Lock()
	defer o.mu.Unlock()
	got := o.got
	o.got = nil
	return got
}

// A forward of a command without a key gives it a new key and says the
// key is unused, on every attempt that no owner took (here: an old owner
// that answers "not the owner"); a command with its own key is never sent
// as unused, whatever it says, and the caller's command is left as it was.
func TestForwardSaysUnusedOnlyOfItsOwnKey(t *testing.T) {
	c := bustest.Start(t, 1)
	owner := &fakeOwner{answers: []*troupev1.ForwardReply{{NotOwner: true}, {Sequence: 7}}}
	oc := c.Connect(0)
	if _, err := oc.QueueSubscribe(forwardSubject(0), forwardQueue, owner.handle); err != nil {
		t.Fatal(err)
	}
	if err := oc.Flush(); err != nil {
		t.Fatal(err)
	}
	f := &forwarder{shardOf: func(string, string) int { return 0 }, nc: c.Connect(0)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cmd := &troupev1.Command{CommandId: "c-1", Kind: "account", EntityId: "a1", Type: "Deposit"}
	out, err := f.Forward(ctx, "n2", cmd, true)
	if err != nil || out.Sequence != 7 {
		t.Fatalf("Forward = %+v, %v", out, err)
	}
	got := owner.take()
	if len(got) != 2 {
		t.Fatalf("the owner got %d attempts, want 2 (not the owner, then served)", len(got))
	}
	key := got[0].GetCommand().GetIdempotencyKey()
	if !strings.HasPrefix(key, "fwd-") || len(key) < 20 {
		t.Fatalf("generated key %q", key)
	}
	for i, fw := range got {
		if fw.GetCommand().GetIdempotencyKey() != key || !fw.GetCommand().GetKeyUnused() {
			t.Fatalf("attempt %d: key %q, unused %v; want %q, unused", i+1, fw.GetCommand().GetIdempotencyKey(), fw.GetCommand().GetKeyUnused(), key)
		}
	}
	if cmd.GetIdempotencyKey() != "" || cmd.GetKeyUnused() {
		t.Fatalf("the caller's command was changed: %v", cmd)
	}

	// Two forwards of keyless commands get different keys (not the
	// command's id, which a caller may send twice).
	if _, err := f.Forward(ctx, "n2", cmd, true); err != nil {
		t.Fatal(err)
	}
	if again := owner.take(); len(again) != 1 || again[0].GetCommand().GetIdempotencyKey() == key {
		t.Fatalf("a second forward of the same keyless command: %v; want one attempt with a new key", again)
	}

	mine := &troupev1.Command{Kind: "account", EntityId: "a1", Type: "Deposit", IdempotencyKey: "client-k", KeyUnused: true}
	if _, err := f.Forward(ctx, "n2", mine, true); err != nil {
		t.Fatal(err)
	}
	got = owner.take()
	if len(got) != 1 || got[0].GetCommand().GetIdempotencyKey() != "client-k" || got[0].GetCommand().GetKeyUnused() {
		t.Fatalf("a command with its own key was forwarded as %v; want its key, not unused", got)
	}
	if !mine.GetKeyUnused() {
		t.Fatal("the caller's command was changed")
	}
}
