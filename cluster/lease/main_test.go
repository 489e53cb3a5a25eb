package lease_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/cluster/lease"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast is a configuration with the shortest TTL the server allows, for
// tests: a lease lives 2 s unrenewed; a holder stops at 1.5 s.
var fast = lease.Config{TTL: 2 * time.Second, RenewEvery: 500 * time.Millisecond, Margin: 500 * time.Millisecond, MarkerTTL: 5 * time.Second}

// openStore opens a store on server i's client with cfg; an empty bucket
// name means one named after the test.
func openStore(t testing.TB, c *bustest.Cluster, i int, cfg lease.Config) *lease.Store {
	t.Helper()
	return openStoreJS(t, c.JetStream(i), cfg)
}

func openStoreJS(t testing.TB, js jetstream.JetStream, cfg lease.Config) *lease.Store {
	t.Helper()
	if cfg.Bucket == "" {
		cfg.Bucket = strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
				return r
			}
			return '-'
		}, t.Name())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := lease.Open(ctx, js, cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustAcquire(t testing.TB, s *lease.Store, name, holder string, opts ...lease.AcquireOption) lease.Lease {
	t.Helper()
	l, err := s.Acquire(ctxT(t, 10*time.Second), name, holder, opts...)
	if err != nil {
		t.Fatalf("acquire %s by %s: %v", name, holder, err)
	}
	if l.Name != name || l.Holder != holder || l.Epoch == 0 || l.Revision != l.Epoch {
		t.Fatalf("acquire %s by %s: %+v", name, holder, l)
	}
	return l
}

func wantHeld(t testing.TB, err error, holder string, epoch uint64) *lease.HeldError {
	t.Helper()
	var he *lease.HeldError
	if !errors.As(err, &he) {
		t.Fatalf("got %v, want a *HeldError by %s", err, holder)
	}
	if he.Holder != holder || he.Epoch != epoch {
		t.Fatalf("held by %s epoch %d, want %s epoch %d", he.Holder, he.Epoch, holder, epoch)
	}
	return he
}

func wantLost(t testing.TB, err error, reason lease.LostReason) *lease.LostError {
	t.Helper()
	var le *lease.LostError
	if !errors.As(err, &le) || !errors.Is(err, lease.ErrLost) {
		t.Fatalf("got %v, want a *LostError (%s)", err, reason)
	}
	if le.Reason != reason {
		t.Fatalf("lost %s, want %s: %v", le.Reason, reason, err)
	}
	return le
}

// acquireWithin polls Acquire until it succeeds or d passes. It returns the
// lease and the time the successful attempt was sent.
func acquireWithin(t testing.TB, s *lease.Store, name, holder string, d time.Duration, opts ...lease.AcquireOption) (lease.Lease, time.Time) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		sent := time.Now()
		l, err := s.Acquire(ctxT(t, 10*time.Second), name, holder, opts...)
		if err == nil {
			return l, sent
		}
		var he *lease.HeldError
		if !errors.As(err, &he) {
			t.Fatalf("acquire %s by %s: %v", name, holder, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("acquire %s by %s: still held after %s: %v", name, holder, d, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval of a contender, not synchronisation
	}
}
