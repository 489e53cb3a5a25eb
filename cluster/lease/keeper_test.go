package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/cluster/lease"
)

// waitRenewed waits (bounded) until the keeper's lease has a revision
// above rev.
func waitRenewed(t *testing.T, k *lease.Keeper, rev uint64, within time.Duration) lease.Lease {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l, ok := k.Lease()
		if !ok {
			t.Fatalf("keeper stopped holding: %v", k.Err())
		}
		if l.Revision > rev {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("not renewed within %s", within)
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
}

// watchDone records when the keeper's Done closes.
func watchDone(t *testing.T, k *lease.Keeper) <-chan time.Time {
	at := make(chan time.Time, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-k.Done():
			at <- time.Now()
		case <-stop:
		}
	})
	t.Cleanup(func() { close(stop); wg.Wait() })
	return at
}

// A keeper holds a lease far past its TTL, and its Close hands the lease
// over at once.
func testKeeperRenews(t *testing.T, c *bustest.Cluster) {
	a, b := openStore(t, c, 0, fast), openStore(t, c, 1, fast)
	l := mustAcquire(t, a, "kept", "a")
	k, err := a.Keep(l)
	if err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(2 * fast.TTL)
	for time.Now().Before(until) {
		if _, ok := k.Lease(); !ok {
			t.Fatalf("keeper stopped holding: %v", k.Err())
		}
		_, err := b.Acquire(ctxT(t, 5*time.Second), "kept", "b")
		wantHeld(t, err, "a", l.Epoch)
		time.Sleep(100 * time.Millisecond) // a contender's polling
	}
	cur, _ := k.Lease()
	if cur.Epoch != l.Epoch || cur.Revision < l.Revision+4 || !cur.Expires.After(l.Expires) {
		t.Fatalf("after %s: %+v from %+v", 2*fast.TTL, cur, l)
	}
	start := time.Now()
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-k.Done():
	default:
		t.Fatal("Done open after Close")
	}
	if _, ok := k.Lease(); ok || !errors.Is(k.Err(), lease.ErrClosed) {
		t.Fatalf("after Close: held %v, err %v", ok, k.Err())
	}
	lb := mustAcquire(t, b, "kept", "b")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("handover by Close took %s", d)
	}
	if lb.Epoch <= l.Epoch {
		t.Fatalf("epoch %d after %d", lb.Epoch, l.Epoch)
	}
	if err := k.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// A keeper whose lease is taken over reports the loss at its next
// renewal.
func testKeeperTakenOver(t *testing.T, c *bustest.Cluster) {
	a, b := openStore(t, c, 0, fast), openStore(t, c, 1, fast)
	l := mustAcquire(t, a, "kept-taken", "a")
	k, err := a.Keep(l)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	lb := mustAcquire(t, b, "kept-taken", "b", lease.TakeOver("a"))
	select {
	case <-k.Done():
	case <-time.After(fast.RenewEvery + 2*time.Second):
		t.Fatal("keeper did not report the takeover")
	}
	le := wantLost(t, k.Err(), lease.Superseded)
	if le.Epoch != l.Epoch || le.Revision != lb.Revision {
		t.Fatalf("lost error %+v; b holds revision %d", le, lb.Revision)
	}
	if _, ok := k.Lease(); ok {
		t.Fatal("still valid after the loss")
	}
	if err := k.Close(); err != nil {
		t.Fatalf("Close after a loss: %v", err)
	}
	if e, err := b.Peek(ctxT(t, 5*time.Second), "kept-taken"); err != nil || e.Holder != "b" || e.Revision != lb.Revision {
		t.Fatalf("the lost keeper's Close changed the entry: %+v, %v", e, err)
	}
}

// A keeper cut off from the bucket stops holding at its deadline, which
// comes before anybody else can be granted the lease.
func testKeeperCutOff(t *testing.T, c *bustest.Cluster) {
	cfg := fast
	cfg.Bucket = "cut-off"
	b := openStore(t, c, 1, cfg)
	nc := c.Connect(0)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	a := openStoreJS(t, js, cfg)
	l := mustAcquire(t, a, "cut", "a")
	k, err := a.Keep(l)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	doneAt := watchDone(t, k)
	last := waitRenewed(t, k, l.Revision, 2*fast.RenewEvery)
	nc.Close()

	lb, sent := acquireWithin(t, b, "cut", "b", 3*fast.TTL)
	won := time.Now()
	final, ok := k.Lease()
	if ok {
		t.Fatal("the cut-off keeper still holds while b was granted the lease")
	}
	wantLost(t, k.Err(), lease.Expired)
	var lost time.Time
	select {
	case lost = <-doneAt:
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	t.Logf("last renewal's deadline %s; keeper stopped %s after it; b sent its grant %s after it, granted %s after it",
		final.Expires.Sub(last.Expires), lost.Sub(final.Expires), sent.Sub(final.Expires), won.Sub(final.Expires))
	if lost.Before(final.Expires) || lost.Sub(final.Expires) > 250*time.Millisecond {
		t.Fatalf("keeper reported the loss %s after its deadline", lost.Sub(final.Expires))
	}
	if !lost.Before(won) || sent.Before(final.Expires) {
		t.Fatalf("overlap: keeper held until %s, stopped at %s; b sent at %s, granted at %s", final.Expires, lost, sent, won)
	}
	if lb.Epoch <= l.Epoch {
		t.Fatalf("epoch %d after %d", lb.Epoch, l.Epoch)
	}
}

// The server leading the bucket stops while a keeper renews through it:
// the keeper survives the leader change. Then the next leader stops too,
// which leaves one server of three and no quorum: the keeper reports the
// loss at its deadline, and the contender is granted the lease only after
// a server returns, and after that deadline. At no moment do two holders
// both believe they own the lease.
func TestKeeperLeaderStopped(t *testing.T) {
	c := bustest.Start(t, 3)
	warns := &countWarns{}
	cfg := lease.Config{Bucket: "failover", TTL: 4 * time.Second, RenewEvery: time.Second, Margin: time.Second, MarkerTTL: 5 * time.Second,
		Logger: slog.New(warns)}
	openStore(t, c, 0, cfg) // creates the bucket
	leader := bucketLeader(t, c, 0, "KV_failover")
	a := openStore(t, c, leader, cfg)              // renews through the leader
	b := openStore(t, c, (leader+1)%c.Size(), cfg) // contends through a follower
	l := mustAcquire(t, a, "singleton", "a")
	k, err := a.Keep(l)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	doneAt := watchDone(t, k)
	waitRenewed(t, k, l.Revision, 2*cfg.RenewEvery)

	// The contender tries all along; it records when it won.
	type win struct {
		l          lease.Lease
		sent, okAt time.Time
	}
	won := make(chan win, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var unavailable atomic.Int64
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			sent := time.Now()
			lb, err := b.Acquire(ctx, "singleton", "b")
			cancel()
			if err == nil {
				won <- win{lb, sent, time.Now()}
				return
			}
			var he *lease.HeldError
			if !errors.As(err, &he) {
				unavailable.Add(1)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	// Phase 1: the leader stops; the keeper renews through the next one.
	c.Stop(leader)
	select {
	case <-time.After(3 * cfg.TTL): // the observation window
	case <-k.Done():
		t.Fatalf("keeper lost the lease when the leader stopped: %v", k.Err())
	case w := <-won:
		t.Fatalf("contender granted epoch %d while the keeper holds", w.l.Epoch)
	}
	held, ok := k.Lease()
	if !ok || held.Revision < l.Revision+6 { // about 12 renewals are due
		t.Fatalf("after the leader stopped: holding %v, revision %d from %d", ok, held.Revision, l.Revision)
	}
	t.Logf("phase 1: leader %s stopped; keeper renewed to revision %d; %d renewals failed or went unanswered; the contender saw %d errors other than held",
		c.Name(leader), held.Revision, warns.n.Load(), unavailable.Load())

	// Phase 2: the next leader stops too; no quorum is left.
	alive := (leader + 1) % c.Size()
	second := bucketLeader(t, c, alive, "KV_failover")
	stopped := time.Now()
	c.Stop(second)
	var lost time.Time
	select {
	case lost = <-doneAt:
	case <-time.After(2 * cfg.TTL):
		t.Fatalf("keeper still holds %s after quorum was lost", 2*cfg.TTL)
	case w := <-won:
		t.Fatalf("contender granted epoch %d without a quorum", w.l.Epoch)
	}
	final, ok := k.Lease()
	if ok {
		t.Fatal("keeper reported the loss but still holds")
	}
	wantLost(t, k.Err(), lease.Expired)
	if lost.Before(final.Expires) || lost.Sub(final.Expires) > 250*time.Millisecond {
		t.Fatalf("keeper stopped holding %s after its deadline", lost.Sub(final.Expires))
	}
	t.Logf("deadline %s lost %s", final.Expires.Format("15:04:05.000"), lost.Format("15:04:05.000"))
	t.Logf("phase 2: %s stopped too; the keeper stopped holding %s later, %s after its deadline",
		c.Name(second), lost.Sub(stopped).Round(time.Millisecond), lost.Sub(final.Expires).Round(time.Millisecond))

	// A server returns: the quorum is back and the contender gets in, after
	// the keeper's deadline.
	c.Restart(leader)
	var w win
	select {
	case w = <-won:
	case <-time.After(60 * time.Second):
		t.Fatalf("contender not granted within 60s after a server returned (%d errors)", unavailable.Load())
	}
	t.Logf("phase 2: contender granted epoch %d, %s after the keeper's deadline", w.l.Epoch, w.okAt.Sub(final.Expires).Round(time.Millisecond))
	if w.sent.Before(final.Expires) || !lost.Before(w.okAt) {
		t.Fatalf("overlap: keeper held until %s (stopped at %s), contender sent %s, granted %s", final.Expires, lost, w.sent, w.okAt)
	}
	if w.l.Epoch <= final.Epoch {
		t.Fatalf("epoch %d after %d", w.l.Epoch, final.Epoch)
	}
}

// countWarns is a slog handler that counts warnings.
type countWarns struct{ n atomic.Int64 }

func (h *countWarns) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h *countWarns) Handle(_ context.Context, r slog.Record) error {
	h.n.Add(1)
	if os.Getenv("LEASE_DEBUG") != "" {
		fmt.Fprintln(os.Stderr, time.Now().Format("15:04:05.000"), r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintln(os.Stderr, "   ", a.Key, a.Value); return true })
	}
	return nil
}
func (h *countWarns) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countWarns) WithGroup(string) slog.Handler      { return h }
