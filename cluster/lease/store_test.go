package lease_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/cluster/lease"
)

// TestLeases runs the scenarios that do not stop servers on one cluster of
// three servers, each scenario on its own bucket.
func TestLeases(t *testing.T) {
	c := bustest.Start(t, 3)
	t.Run("exclusive", func(t *testing.T) { testExclusive(t, c) })
	t.Run("renew keeps it past the TTL", func(t *testing.T) { testRenewKeeps(t, c) })
	t.Run("expiry hands over", func(t *testing.T) { testExpiry(t, c) })
	t.Run("stale holder changes nothing", func(t *testing.T) { testStale(t, c) })
	t.Run("release hands over at once", func(t *testing.T) { testRelease(t, c) })
	t.Run("take over a dead holder", func(t *testing.T) { testTakeOver(t, c) })
	t.Run("same holder takes a new epoch", func(t *testing.T) { testSameHolder(t, c) })
	t.Run("bad input", func(t *testing.T) { testBadInput(t, c) })
	t.Run("foreign value", func(t *testing.T) { testForeign(t, c) })
	t.Run("bucket", func(t *testing.T) { testBucket(t, c) })
	t.Run("keeper renews and releases", func(t *testing.T) { testKeeperRenews(t, c) })
	t.Run("keeper reports a takeover", func(t *testing.T) { testKeeperTakenOver(t, c) })
	t.Run("keeper cut off stops before others start", func(t *testing.T) { testKeeperCutOff(t, c) })
}

// Many clients on every server race for one name, round after round:
// exactly one wins each round, the others see it as the holder, and the
// epochs rise strictly, across releases and across takeovers.
func testExclusive(t *testing.T, c *bustest.Cluster) {
	const clients, rounds = 9, 8
	cfg := fast
	cfg.Bucket = "exclusive"
	stores := make([]*lease.Store, clients)
	for i := range stores {
		stores[i] = openStore(t, c, i%c.Size(), cfg) // a connection each
	}
	var prev lease.Lease
	for round := range rounds {
		// Odd rounds race for a held lease whose holder is declared dead;
		// even rounds for a released one.
		var opts []lease.AcquireOption
		if round%2 == 1 {
			opts = append(opts, lease.TakeOver(prev.Holder))
		}
		type result struct {
			l   lease.Lease
			err error
		}
		results := make([]result, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range clients {
			if round%2 == 1 && prev.Holder == fmt.Sprintf("c%d", i) {
				// A dead node does not contend (if it did, it could win
				// and then be taken over by a second winner, rightly).
				results[i] = result{err: &lease.HeldError{Holder: "?"}}
				continue
			}
			wg.Go(func() {
				<-start
				l, err := stores[i].Acquire(ctxT(t, 10*time.Second), "the-one", fmt.Sprintf("c%d", i), opts...)
				results[i] = result{l, err}
			})
		}
		close(start)
		wg.Wait()
		var winners []lease.Lease
		for _, r := range results {
			if r.err == nil {
				winners = append(winners, r.l)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners: %+v", round, len(winners), results)
		}
		w := winners[0]
		for i, r := range results {
			if r.err != nil && !(round%2 == 1 && prev.Holder == fmt.Sprintf("c%d", i)) {
				wantHeld(t, r.err, w.Holder, w.Epoch)
			}
		}
		if w.Epoch <= prev.Epoch {
			t.Fatalf("round %d: epoch %d after %d", round, w.Epoch, prev.Epoch)
		}
		if round%2 == 1 {
			// The dead holder's lease is gone: its renewal fails.
			_, err := stores[0].Renew(ctxT(t, 5*time.Second), prev)
			wantLost(t, err, lease.Superseded)
		}
		t.Logf("round %d: %s won epoch %d", round, w.Holder, w.Epoch)
		if round%2 == 1 || round == rounds-1 {
			var idx int
			fmt.Sscanf(w.Holder, "c%d", &idx)
			if err := stores[idx].Release(ctxT(t, 5*time.Second), w); err != nil {
				t.Fatal(err)
			}
		}
		prev = w
	}
}

// Renewals keep a lease well past its TTL under the same epoch; a
// contender sees it held throughout.
func testRenewKeeps(t *testing.T, c *bustest.Cluster) {
	a, b := openStore(t, c, 0, fast), openStore(t, c, 1, fast)
	l := mustAcquire(t, a, "renewed", "a")
	epoch, until := l.Epoch, time.Now().Add(2*fast.TTL)
	for time.Now().Before(until) {
		next := time.Now().Add(fast.RenewEvery)
		nl, err := a.Renew(ctxT(t, 5*time.Second), l)
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		if nl.Epoch != epoch || nl.Revision <= l.Revision || !nl.Expires.After(l.Expires) {
			t.Fatalf("renewed %+v from %+v", nl, l)
		}
		l = nl
		_, err = b.Acquire(ctxT(t, 5*time.Second), "renewed", "b")
		wantHeld(t, err, "a", epoch)
		time.Sleep(time.Until(next)) // the renewal cadence under test
	}
	e, err := b.Peek(ctxT(t, 5*time.Second), "renewed")
	if err != nil || e.Holder != "a" || e.Epoch != epoch || e.Revision != l.Revision || e.TTL != fast.TTL {
		t.Fatalf("peek: %+v, %v", e, err)
	}
}

// A holder that stops renewing loses the lease after the TTL; the next
// holder gets a higher epoch, not before the TTL and not much after.
func testExpiry(t *testing.T, c *bustest.Cluster) {
	a, b := openStore(t, c, 0, fast), openStore(t, c, 2, fast)
	start := time.Now()
	la := mustAcquire(t, a, "expiring", "a")
	lb, sent := acquireWithin(t, b, "expiring", "b", 3*fast.TTL)
	took := time.Since(start)
	t.Logf("taken over %s after the first grant (TTL %s)", took.Round(time.Millisecond), fast.TTL)
	if sent.Sub(start) < fast.TTL-fast.Margin || took < fast.TTL {
		t.Fatalf("taken over after %s, before the TTL %s", took, fast.TTL)
	}
	if took > fast.TTL+1500*time.Millisecond {
		t.Fatalf("taken over after %s, long after the TTL %s", took, fast.TTL)
	}
	if !sent.After(la.Expires) {
		t.Fatalf("b's grant was sent at %s, before a's deadline %s", sent, la.Expires)
	}
	if lb.Epoch <= la.Epoch {
		t.Fatalf("epoch %d after %d", lb.Epoch, la.Epoch)
	}
	// a's lease is past its deadline: Renew refuses without writing.
	_, err := a.Renew(ctxT(t, 5*time.Second), la)
	wantLost(t, err, lease.Expired)
	if e, err := b.Peek(ctxT(t, 5*time.Second), "expiring"); err != nil || e.Holder != "b" || e.Revision != lb.Revision {
		t.Fatalf("peek: %+v, %v", e, err)
	}
}

// A holder whose lease was taken over fails to renew or release, typed,
// and changes nothing.
func testStale(t *testing.T, c *bustest.Cluster) {
	a, b := openStore(t, c, 0, fast), openStore(t, c, 1, fast)
	la := mustAcquire(t, a, "stale", "a")
	lb := mustAcquire(t, b, "stale", "b", lease.TakeOver("a"))
	before, err := b.Peek(ctxT(t, 5*time.Second), "stale")
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Renew(ctxT(t, 5*time.Second), la)
	le := wantLost(t, err, lease.Superseded)
	if le.Name != "stale" || le.Holder != "a" || le.Epoch != la.Epoch || le.Revision != lb.Revision {
		t.Fatalf("lost error %+v; b holds revision %d", le, lb.Revision)
	}
	wantLost(t, a.Release(ctxT(t, 5*time.Second), la), lease.Superseded)
	after, err := b.Peek(ctxT(t, 5*time.Second), "stale")
	if err != nil || after != before {
		t.Fatalf("entry changed by a stale holder: %+v -> %+v (%v)", before, after, err)
	}
	if _, err := b.Renew(ctxT(t, 5*time.Second), lb); err != nil {
		t.Fatalf("the holder's renewal after a stale one's: %v", err)
	}
}

// A release lets another holder in at once, well under half a second.
func testRelease(t *testing.T, c *bustest.Cluster) {
	cfg := fast
	cfg.TTL, cfg.RenewEvery, cfg.Margin = 30*time.Second, 5*time.Second, time.Second
	a, b := openStore(t, c, 0, cfg), openStore(t, c, 1, cfg)
	for i := range 5 {
		la := mustAcquire(t, a, "released", "a")
		_, err := b.Acquire(ctxT(t, 5*time.Second), "released", "b")
		wantHeld(t, err, "a", la.Epoch)
		start := time.Now()
		if err := a.Release(ctxT(t, 5*time.Second), la); err != nil {
			t.Fatal(err)
		}
		lb := mustAcquire(t, b, "released", "b")
		handover := time.Since(start)
		t.Logf("handover %d: %s", i, handover)
		if handover > 500*time.Millisecond {
			t.Fatalf("handover took %s", handover)
		}
		if lb.Epoch <= la.Epoch {
			t.Fatalf("epoch %d after %d", lb.Epoch, la.Epoch)
		}
		if err := b.Release(ctxT(t, 5*time.Second), lb); err != nil {
			t.Fatal(err)
		}
		// Releasing twice is a stale release.
		wantLost(t, b.Release(ctxT(t, 5*time.Second), lb), lease.Superseded)
	}
}

// A holder that membership reports dead is taken over before its lease
// expires; of two contenders exactly one wins.
func testTakeOver(t *testing.T, c *bustest.Cluster) {
	cfg := fast
	cfg.TTL, cfg.RenewEvery, cfg.Margin = 60*time.Second, 10*time.Second, time.Second
	a := openStore(t, c, 0, cfg)
	contenders := []*lease.Store{openStore(t, c, 1, cfg), openStore(t, c, 2, cfg)}
	for round := range 5 {
		name := fmt.Sprintf("dead-%d", round)
		la := mustAcquire(t, a, name, "a")
		_, err := contenders[0].Acquire(ctxT(t, 5*time.Second), name, "b")
		wantHeld(t, err, "a", la.Epoch)
		// Someone else than the dead is not taken over.
		_, err = contenders[0].Acquire(ctxT(t, 5*time.Second), name, "b", lease.TakeOver("x", "y"))
		wantHeld(t, err, "a", la.Epoch)

		start := time.Now()
		var wg sync.WaitGroup
		ls, errs := make([]lease.Lease, 2), make([]error, 2)
		for i, s := range contenders {
			wg.Go(func() {
				ls[i], errs[i] = s.Acquire(ctxT(t, 10*time.Second), name, fmt.Sprintf("c%d", i), lease.TakeOver("a"))
			})
		}
		wg.Wait()
		took := time.Since(start)
		w := -1
		for i := range errs {
			if errs[i] == nil {
				if w >= 0 {
					t.Fatalf("round %d: both won: %+v", round, ls)
				}
				w = i
			}
		}
		if w < 0 {
			t.Fatalf("round %d: nobody won: %v", round, errs)
		}
		wantHeld(t, errs[1-w], ls[w].Holder, ls[w].Epoch)
		if ls[w].Epoch <= la.Epoch {
			t.Fatalf("epoch %d after %d", ls[w].Epoch, la.Epoch)
		}
		if took > 2*time.Second {
			t.Fatalf("takeover took %s", took)
		}
		_, err = a.Renew(ctxT(t, 5*time.Second), la)
		wantLost(t, err, lease.Superseded)
	}
}

// A holder acquiring its own lease again (a restarted node) gets a new
// epoch, which fences its earlier self.
func testSameHolder(t *testing.T, c *bustest.Cluster) {
	a := openStore(t, c, 0, fast)
	l1 := mustAcquire(t, a, "again", "a")
	l2 := mustAcquire(t, a, "again", "a")
	if l2.Epoch <= l1.Epoch {
		t.Fatalf("epoch %d after %d", l2.Epoch, l1.Epoch)
	}
	_, err := a.Renew(ctxT(t, 5*time.Second), l1)
	wantLost(t, err, lease.Superseded)
	if _, err := a.Renew(ctxT(t, 5*time.Second), l2); err != nil {
		t.Fatal(err)
	}
}

func testBadInput(t *testing.T, c *bustest.Cluster) {
	s := openStore(t, c, 0, fast)
	good := mustAcquire(t, s, "good", "a")
	for _, tc := range []struct {
		name, lease, holder string
		want                error
		text                string
	}{
		{name: "empty name", lease: "", holder: "a", want: lease.ErrInvalidName, text: "empty"},
		{name: "space", lease: "a b", holder: "a", want: lease.ErrInvalidName, text: "letters"},
		{name: "wildcard", lease: "shard.*", holder: "a", want: lease.ErrInvalidName, text: "letters"},
		{name: "full wildcard", lease: ">", holder: "a", want: lease.ErrInvalidName, text: "letters"},
		{name: "leading dot", lease: ".a", holder: "a", want: lease.ErrInvalidName, text: "start or end"},
		{name: "trailing dot", lease: "a.", holder: "a", want: lease.ErrInvalidName, text: "start or end"},
		{name: "empty token", lease: "a..b", holder: "a", want: lease.ErrInvalidName, text: "between dots"},
		{name: "unicode", lease: "schärd", holder: "a", want: lease.ErrInvalidName, text: "letters"},
		{name: "too long", lease: strings.Repeat("x", 257), holder: "a", want: lease.ErrInvalidName, text: "over 256"},
		{name: "empty holder", lease: "a", holder: "", want: lease.ErrInvalidName, text: "empty holder"},
		{name: "holder not utf-8", lease: "a", holder: "\xff", want: lease.ErrInvalidName, text: "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Acquire(ctxT(t, 5*time.Second), tc.lease, tc.holder)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("acquire(%q, %q): %v; want %v mentioning %q", tc.lease, tc.holder, err, tc.want, tc.text)
			}
			if tc.holder != "" && tc.holder != "\xff" {
				if _, err := s.Peek(ctxT(t, 5*time.Second), tc.lease); !errors.Is(err, tc.want) {
					t.Fatalf("peek(%q): %v", tc.lease, err)
				}
			}
		})
	}
	for _, tc := range []struct {
		name string
		l    lease.Lease
		want error
	}{
		{"zero lease", lease.Lease{}, lease.ErrInvalidName},
		{"no epoch", lease.Lease{Name: "good", Holder: "a", Revision: 3, Expires: good.Expires}, lease.ErrInvalidLease},
		{"revision below epoch", lease.Lease{Name: "good", Holder: "a", Epoch: 3, Revision: 2, Expires: good.Expires}, lease.ErrInvalidLease},
		{"bad name", lease.Lease{Name: "a b", Holder: "a", Epoch: 1, Revision: 1, Expires: good.Expires}, lease.ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Renew(ctxT(t, 5*time.Second), tc.l); !errors.Is(err, tc.want) {
				t.Fatalf("renew: %v, want %v", err, tc.want)
			}
			if err := s.Release(ctxT(t, 5*time.Second), tc.l); !errors.Is(err, tc.want) {
				t.Fatalf("release: %v, want %v", err, tc.want)
			}
			if _, err := s.Keep(tc.l); !errors.Is(err, tc.want) {
				t.Fatalf("keep: %v, want %v", err, tc.want)
			}
		})
	}
	// The good lease was untouched by all of it.
	if _, err := s.Renew(ctxT(t, 5*time.Second), good); err != nil {
		t.Fatal(err)
	}
}

// A key that holds something else than a lease record is reported, not
// taken over.
func testForeign(t *testing.T, c *bustest.Cluster) {
	cfg := fast
	cfg.Bucket = "foreign"
	s := openStore(t, c, 0, cfg)
	js := c.JetStream(1)
	kv, err := js.KeyValue(ctxT(t, 5*time.Second), "foreign")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctxT(t, 5*time.Second), "junk", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	_, err = s.Acquire(ctxT(t, 5*time.Second), "junk", "a")
	if err == nil || !strings.Contains(err.Error(), "did not write") {
		t.Fatalf("acquire over a foreign value: %v", err)
	}
}

// Open creates an R3 bucket on a cluster, and refuses a bucket that
// cannot hold per-key TTLs.
func testBucket(t *testing.T, c *bustest.Cluster) {
	openStore(t, c, 2, fast)
	st, err := c.JetStream(0).Stream(ctxT(t, 5*time.Second), "KV_"+strings.ReplaceAll(t.Name(), "/", "-"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.Replicas != 3 || !cfg.AllowMsgTTL || cfg.MaxMsgsPerSubject != 1 {
		t.Fatalf("bucket: replicas %d, msg ttl %v, history %d", cfg.Replicas, cfg.AllowMsgTTL, cfg.MaxMsgsPerSubject)
	}

	if _, err := c.JetStream(0).CreateKeyValue(ctxT(t, 10*time.Second), jetstream.KeyValueConfig{Bucket: "plain", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	_, err = lease.Open(ctxT(t, 10*time.Second), c.JetStream(1), lease.Config{Bucket: "plain"})
	if err == nil || !strings.Contains(err.Error(), "LimitMarkerTTL") {
		t.Fatalf("open a bucket without per-key TTLs: %v", err)
	}
	if _, err := lease.Open(ctxT(t, 10*time.Second), c.JetStream(1), lease.Config{Bucket: "a.b"}); err == nil || !strings.Contains(err.Error(), "bucket") {
		t.Fatalf("open with an invalid bucket name: %v", err)
	}
}
