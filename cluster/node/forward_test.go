package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/actors/codes"
	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/cluster/link"
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

// linkOwner serves the forward link like a node's shard server: it
// answers with answers (as fakeOwner does), or, with breakFirst, takes the
// first request and closes the connection without an answer.
func linkOwner(t *testing.T, o *fakeOwner, breakFirst bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var broke atomic.Bool
	var srv *link.Server
	srv = link.Serve(ln, link.ServerConfig{Secret: "s", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Handler: func(ctx context.Context, req []byte) []byte {
			var fw troupev1.Forward
			if err := proto.Unmarshal(req, &fw); err != nil {
				return nil
			}
			o.mu.Lock()
			o.got = append(o.got, &fw)
			o.n++
			r := o.answers[min(o.n, len(o.answers))-1]
			o.mu.Unlock()
			if breakFirst && broke.CompareAndSwap(false, true) {
				go srv.Close() // the owner dies with the command on it
				<-ctx.Done()
				return nil
			}
			b, _ := proto.Marshal(r)
			return b
		}})
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// A forward goes over the link to the owner the placement names, and
// only there when it answers. When that node no longer owns the shard, or
// cannot be reached, the same forward goes over NATS at once, still saying
// the key is unused (nothing can have run); when the link broke with the
// command on it, the NATS attempt has the key looked up.
func TestForwardOverTheLinkFallsBackToNATS(t *testing.T) {
	c := bustest.Start(t, 1)
	natsOwner := &fakeOwner{answers: []*troupev1.ForwardReply{{Sequence: 9}}}
	oc := c.Connect(0)
	if _, err := oc.QueueSubscribe(forwardSubject(0), forwardQueue, natsOwner.handle); err != nil {
		t.Fatal(err)
	}
	if err := oc.Flush(); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := closed.Addr().String()
	closed.Close()
	for _, tc := range []struct {
		name         string
		answers      []*troupev1.ForwardReply
		breakFirst   bool
		addr         string // "" : the link owner's
		wantSeq      uint64
		wantDirect   int64
		wantNATS     int64
		natsUnused   bool // the NATS attempt says the key is unused
		linkRequests int
	}{
		{name: "answered over the link", answers: []*troupev1.ForwardReply{{Sequence: 5}}, wantSeq: 5, wantDirect: 1, linkRequests: 1},
		{name: "not the owner any more", answers: []*troupev1.ForwardReply{{NotOwner: true}}, wantSeq: 9, wantDirect: 1, wantNATS: 1, natsUnused: true, linkRequests: 1},
		{name: "no link listening", addr: nowhere, wantSeq: 9, wantDirect: 1, wantNATS: 1, natsUnused: true},
		{name: "the link broke with the command on it", answers: []*troupev1.ForwardReply{{Sequence: 5}}, breakFirst: true, wantSeq: 9, wantDirect: 1, wantNATS: 1, linkRequests: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo := &fakeOwner{answers: tc.answers}
			addr := tc.addr
			if addr == "" {
				addr = linkOwner(t, lo, tc.breakFirst)
			}
			cli := link.NewClient(link.ClientConfig{Secret: "s"})
			defer cli.Close()
			f := &forwarder{shardOf: func(string, string) int { return 0 }, nc: c.Connect(0), link: cli,
				linkAddr: func(node string) string {
					if node == "n2" {
						return addr
					}
					return ""
				}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := f.Forward(ctx, "n2", &troupev1.Command{CommandId: "c", Kind: "account", EntityId: "a1", Type: "Deposit"}, true)
			if err != nil || out.Sequence != tc.wantSeq {
				t.Fatalf("Forward = %+v, %v; want sequence %d", out, err, tc.wantSeq)
			}
			if d, n := f.direct.Load(), f.viaNATS.Load(); d != tc.wantDirect || n != tc.wantNATS {
				t.Fatalf("%d attempts over the link and %d over NATS, want %d and %d", d, n, tc.wantDirect, tc.wantNATS)
			}
			got := lo.take()
			if len(got) != tc.linkRequests {
				t.Fatalf("the link owner got %d requests, want %d", len(got), tc.linkRequests)
			}
			if len(got) > 0 && !got[0].GetCommand().GetKeyUnused() {
				t.Fatal("the first attempt over the link does not say its new key is unused")
			}
			viaNATS := natsOwner.take()
			if int64(len(viaNATS)) != tc.wantNATS {
				t.Fatalf("the NATS owner got %d requests, want %d", len(viaNATS), tc.wantNATS)
			}
			if len(viaNATS) > 0 {
				if u := viaNATS[0].GetCommand().GetKeyUnused(); u != tc.natsUnused {
					t.Fatalf("the NATS attempt says key unused = %v, want %v", u, tc.natsUnused)
				}
				if len(got) > 0 && viaNATS[0].GetCommand().GetIdempotencyKey() != got[0].GetCommand().GetIdempotencyKey() {
					t.Fatal("the NATS attempt carries another key than the link's")
				}
			}
		})
	}
}

// A forward that no node served in time says the command was not
// applied, and why when this node knows it: a cluster without a majority
// serves no moved shard, and "moving" alone would send the user looking
// for a move that cannot happen.
func TestForwardNotServedSaysWhy(t *testing.T) {
	c := bustest.Start(t, 1) // nobody serves shard 0
	for _, tc := range []struct {
		name, reason, want string
		ready              bool
	}{
		{"ready", "", "shard 0 is moving between nodes and no node served it in time", true},
		{"no majority", "this node sees only 1 of 3 members alive: no majority",
			"shard 0 was served by no node in time, and this node reports the cluster not ready (this node sees only 1 of 3 members alive: no majority)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &forwarder{shardOf: func(string, string) int { return 0 }, nc: c.Connect(0),
				ready: func() (bool, string) { return tc.ready, tc.reason }}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_, err := f.Forward(ctx, "", &troupev1.Command{Kind: "account", EntityId: "a1", Type: "Deposit"}, true)
			var ce *codes.Error
			if !errors.As(err, &ce) || ce.Code != codes.Unavailable {
				t.Fatalf("Forward error = %v; want an unavailable error", err)
			}
			for _, part := range []string{"account/a1: ", tc.want, "the command was not applied: send it again"} {
				if !strings.Contains(ce.Message, part) {
					t.Errorf("message %q lacks %q", ce.Message, part)
				}
			}
		})
	}
}
