package lease_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/cluster/lease"
)

// lossy is a real JetStream client whose publishes can be made to look
// timed out: either the message is applied and only its ack is lost (the
// ambiguous case: "a timeout is not a failure"), or the message is never
// sent.
type lossy struct {
	jetstream.JetStream
	mu       sync.Mutex
	loseAcks int           // the next n publishes are applied, their acks lost
	drop     int           // the next n publishes are not sent
	stall    int           // the next n publishes are applied, their acks never come
	stalled  chan struct{} // receives when a stalled publish is waiting
	sent     int           // publishes that reached the server
}

func (j *lossy) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	j.mu.Lock()
	drop, lose, stall := j.drop > 0, j.loseAcks > 0, j.stall > 0
	switch {
	case drop:
		j.drop--
	case stall:
		j.stall--
		j.sent++
	case lose:
		j.loseAcks--
		j.sent++
	default:
		j.sent++
	}
	j.mu.Unlock()
	if drop {
		return nil, context.DeadlineExceeded
	}
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if stall && err == nil {
		// Applied, and the ack is never seen: the caller waits its
		// whole context out.
		j.stalled <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if lose && err == nil {
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

func (j *lossy) set(loseAcks, drop int) {
	j.mu.Lock()
	j.loseAcks, j.drop, j.sent = loseAcks, drop, 0
	j.mu.Unlock()
}

func (j *lossy) published() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.sent
}

// A write whose ack is lost is decided by re-reading (our message id is
// the latest: done) or resent under the same id (deduplicated), never
// assumed failed or done.
func TestAmbiguousWrites(t *testing.T) {
	c := bustest.Start(t, 3)
	j := &lossy{JetStream: c.JetStream(0)}
	cfg := fast
	cfg.TTL, cfg.RenewEvery, cfg.Margin = 10*time.Second, 2*time.Second, time.Second
	s := openStoreJS(t, j, cfg)
	other := openStore(t, c, 1, cfg)

	peek := func(name string) lease.Entry {
		e, err := other.Peek(ctxT(t, 5*time.Second), name)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, tc := range []struct {
		name           string
		loseAcks, drop int
		published      int // messages that must have reached the server per operation
	}{
		{"ack lost once", 1, 0, 1},
		{"every ack lost", 100, 0, 1},
		{"first send dropped", 0, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "amb-" + map[string]string{"ack lost once": "1", "every ack lost": "all", "first send dropped": "drop"}[tc.name]
			j.set(tc.loseAcks, tc.drop)
			l, err := s.Acquire(ctxT(t, 10*time.Second), name, "a")
			if err != nil {
				t.Fatalf("acquire: %v", err)
			}
			if e := peek(name); e.Holder != "a" || e.Revision != l.Epoch || e.Epoch != l.Epoch {
				t.Fatalf("acquired %+v, the bucket holds %+v", l, e)
			}
			if n := j.published(); n != tc.published {
				t.Fatalf("acquire published %d messages, want %d", n, tc.published)
			}

			j.set(tc.loseAcks, tc.drop)
			nl, err := s.Renew(ctxT(t, 10*time.Second), l)
			if err != nil {
				t.Fatalf("renew: %v", err)
			}
			if e := peek(name); e.Revision != nl.Revision || e.Epoch != l.Epoch || nl.Revision <= l.Revision {
				t.Fatalf("renewed %+v, the bucket holds %+v", nl, e)
			}
			if n := j.published(); n != tc.published {
				t.Fatalf("renew published %d messages, want %d", n, tc.published)
			}

			j.set(tc.loseAcks, tc.drop)
			if err := s.Release(ctxT(t, 10*time.Second), nl); err != nil {
				t.Fatalf("release: %v", err)
			}
			if e := peek(name); e.Holder != "" {
				t.Fatalf("released, the bucket holds %+v", e)
			}
			j.set(0, 0)
		})
	}

	t.Run("never answered", func(t *testing.T) {
		l := mustAcquire(t, s, "amb-never", "a")
		j.set(0, 1000)
		_, err := s.Renew(ctxT(t, 10*time.Second), l)
		if !errors.Is(err, lease.ErrUnavailable) || errors.Is(err, lease.ErrLost) {
			t.Fatalf("renew with every send dropped: %v; want ErrUnavailable, not a loss", err)
		}
		j.set(0, 0)
		// Unknown is not lost: the lease still renews.
		if _, err := s.Renew(ctxT(t, 10*time.Second), l); err != nil {
			t.Fatalf("renew after the outage: %v", err)
		}
	})

	t.Run("ack lost, then superseded", func(t *testing.T) {
		l := mustAcquire(t, s, "amb-taken", "a")
		lb := mustAcquire(t, other, "amb-taken", "b", lease.TakeOver("a"))
		j.set(100, 0)
		_, err := s.Renew(ctxT(t, 10*time.Second), l)
		le := wantLost(t, err, lease.Superseded)
		if le.Revision != lb.Revision {
			t.Fatalf("lost to revision %d, b holds %d", le.Revision, lb.Revision)
		}
		j.set(0, 0)
	})
}

// Close does not wait for a renewal in flight: it cancels it, and when
// the renewal landed all the same (its ack never came), it releases the
// revision the renewal wrote, so the next holder gets the lease at once
// rather than after its TTL.
func TestKeeperCloseCancelsARenewalInFlight(t *testing.T) {
	c := bustest.Start(t, 3)
	j := &lossy{JetStream: c.JetStream(0), stalled: make(chan struct{}, 1)}
	cfg := fast
	cfg.TTL, cfg.RenewEvery, cfg.Margin, cfg.RequestTimeout = 10*time.Second, 200*time.Millisecond, time.Second, 5*time.Second
	s := openStoreJS(t, j, cfg)
	other := openStore(t, c, 1, cfg)

	l := mustAcquire(t, s, "close-in-flight", "a")
	j.set(0, 0)
	j.mu.Lock()
	j.stall = 1
	j.mu.Unlock()
	k, err := s.Keep(l)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-j.stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal started")
	}
	if e, err := other.Peek(ctxT(t, 5*time.Second), "close-in-flight"); err != nil || e.Revision <= l.Revision || e.Holder != "a" {
		t.Fatalf("the stalled renewal did not land: %+v, %v", e, err)
	}
	start := time.Now()
	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Close took %s with a renewal in flight; want it cancelled, not waited for", d)
	}
	lb := mustAcquire(t, other, "close-in-flight", "b")
	if lb.Epoch <= l.Epoch {
		t.Fatalf("epoch %d after %d", lb.Epoch, l.Epoch)
	}
}
