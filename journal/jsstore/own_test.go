package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore"
)

// node opens a Store as one node of a cluster would: on its own
// connection, requiring ownership, every stream "<kind>/<n>-..." in
// partition n. Open is retried while the fresh cluster's meta leader
// does not know every peer yet.
func node(t *testing.T, nc *nats.Conn, prefix string, replicas int, onFenced func(int)) *jsstore.Store {
	t.Helper()
	return nodeWith(t, jsstore.Config{
		Conn: nc, Prefix: prefix, Partitions: 2, Replicas: replicas, RequireOwnership: true, OnFenced: onFenced,
		PartitionOf: func(stream string) int {
			_, id, _ := journal.ParseStream(stream)
			if len(id) > 0 && id[0] == '1' {
				return 1
			}
			return 0
		},
	})
}

// nodeWith opens a Store with cfg, retrying while the cluster forms.
func nodeWith(t *testing.T, cfg jsstore.Config) *jsstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		st  *jsstore.Store
		err error
	)
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
		if st, err = jsstore.Open(ctx, cfg); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func appendEv(ctx context.Context, st journal.Store, stream string, expected uint64, typ string) (journal.AppendResult, error) {
	return st.Append(ctx, journal.AppendRequest{Stream: stream, Expected: expected, Events: []journal.Event{journaltest.Ev(typ, `{}`)}})
}

func wantNotOwner(t *testing.T, what string, err error, partition int) {
	t.Helper()
	var no *journal.NotOwnerError
	if !errors.As(err, &no) || no.Partition != partition || !errors.Is(err, journal.ErrNotOwner) || errors.Is(err, journal.ErrFenced) {
		t.Fatalf("%s: got %v; want *journal.NotOwnerError{Partition: %d}", what, err, partition)
	}
}

func wantFenced(t *testing.T, what string, err error, partition int, epoch uint64, by string, byEpoch uint64) {
	t.Helper()
	var fe *journal.FencedError
	if !errors.As(err, &fe) || !errors.Is(err, journal.ErrNotOwner) || !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("%s: got %v; want *journal.FencedError", what, err)
	}
	if fe.Partition != partition || fe.Epoch != epoch || fe.By != by || fe.ByEpoch != byEpoch {
		t.Fatalf("%s: got %+v; want partition %d, epoch %d, by %q at %d", what, *fe, partition, epoch, by, byEpoch)
	}
}

// Two nodes on one partition: A owns it, B takes it over with a higher
// epoch; A's next write fails as fenced (and did not happen), B continues
// the entity's history gap-free from the leader, A cannot write again
// until it acquires, and cannot acquire under its old epoch.
func TestTakeover(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fencedA := make(chan int, 4)
	a := node(t, c.Connect(0), "own", 3, func(p int) { fencedA <- p })
	b := node(t, c.Connect(1), "own", 3, nil)
	const acct = "acct/0-x"

	_, err := appendEv(ctx, a, acct, 0, "Opened")
	wantNotOwner(t, "append before Acquire", err, 0)
	if _, ok := a.Owned(0); ok {
		t.Fatal("Owned(0) before Acquire")
	}

	fa, err := a.Acquire(ctx, 0, 1, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := a.Owned(0); !ok || got != fa || fa.Partition != 0 || fa.Epoch != 1 || fa.Holder != "node-a" || fa.Sequence == 0 {
		t.Fatalf("Acquire = %+v; Owned = %+v, %v", fa, got, ok)
	}
	for i := range 3 {
		if _, err := appendEv(ctx, a, acct, uint64(i), fmt.Sprint("A", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Partition 1 is not A's.
	_, err = appendEv(ctx, a, "acct/1-y", 0, "Opened")
	wantNotOwner(t, "append to the other partition", err, 1)

	fb, err := b.Acquire(ctx, 0, 2, "node-b")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.LastPosition(0), a.LastPosition(0); got != want || want != fb.Sequence-1 {
		t.Fatalf("B's LastPosition(0) after Acquire %d; A's last event at %d, B's marker at %d", got, want, fb.Sequence)
	}
	if fb.Sequence <= fa.Sequence+3 {
		t.Fatalf("B's marker at %d, not after A's marker %d and 3 events", fb.Sequence, fa.Sequence)
	}

	// A, the zombie: its fence is behind B's marker.
	_, err = appendEv(ctx, a, acct, 3, "Zombie")
	wantFenced(t, "A's append after the takeover", err, 0, 1, "node-b", 2)
	select {
	case p := <-fencedA:
		if p != 0 {
			t.Fatalf("OnFenced(%d), want 0", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnFenced not called")
	}
	if _, ok := a.Owned(0); ok {
		t.Fatal("A still owns partition 0 after being fenced")
	}
	// Later writes of A fail the same way, without trying.
	_, err = appendEv(ctx, a, acct, 3, "Zombie")
	wantFenced(t, "A's second append", err, 0, 1, "node-b", 2)
	err = a.SaveSnapshot(ctx, journal.Snapshot{Stream: acct, Sequence: 1, Data: []byte("s")})
	wantFenced(t, "A's snapshot", err, 0, 1, "node-b", 2)

	// B reads A's history from the leader and continues it.
	if _, err := appendEv(ctx, b, acct, 2, "Stale"); err == nil {
		t.Fatal("B appended with a stale expected sequence")
	} else if ce := (*journal.ConflictError)(nil); !errors.As(err, &ce) || ce.Actual != 3 {
		t.Fatalf("B's stale append: %v; want a conflict at 3", err)
	}
	r, err := appendEv(ctx, b, acct, 3, "B3")
	if err != nil {
		t.Fatal(err)
	}
	if r.FirstSequence != 4 {
		t.Fatalf("B's append at sequence %d, want 4", r.FirstSequence)
	}
	for _, st := range []*jsstore.Store{a, b} {
		evs := journaltest.Collect(t, st.Read(ctx, acct, 1, 0))
		var types []string
		for i, e := range evs {
			if e.Sequence != uint64(i+1) {
				t.Fatalf("sequence %d at index %d: %+v", e.Sequence, i, evs)
			}
			types = append(types, e.Type)
		}
		if fmt.Sprint(types) != "[A0 A1 A2 B3]" {
			t.Fatalf("history %v; want [A0 A1 A2 B3] (the zombie's appends did not happen)", types)
		}
		// Markers are not events.
		all := journaltest.Collect(t, st.ReadAll(ctx, 0, 0, journal.Filter{}, 0))
		if len(all) != 4 {
			t.Fatalf("ReadAll(0) = %d events, want 4: %+v", len(all), all)
		}
	}

	// Released, A is not an owner at all.
	a.Release(0)
	_, err = appendEv(ctx, a, acct, 4, "Zombie")
	wantNotOwner(t, "A's append after Release", err, 0)
	err = a.Tombstone(ctx, acct)
	wantNotOwner(t, "A's tombstone after Release", err, 0)
	// Its old epoch is behind B's marker.
	_, err = a.Acquire(ctx, 0, 1, "node-a")
	wantFenced(t, "A's Acquire with epoch 1", err, 0, 1, "node-b", 2)
	// The same epoch under another name is someone else's lease.
	_, err = a.Acquire(ctx, 0, 2, "node-a")
	wantFenced(t, "A's Acquire with B's epoch", err, 0, 2, "node-b", 2)

	// B acquiring again under its epoch changes nothing.
	again, err := b.Acquire(ctx, 0, 2, "node-b")
	if err != nil || again.Sequence != fb.Sequence {
		t.Fatalf("B's second Acquire = %+v, %v; want its first marker %d", again, err, fb.Sequence)
	}
	if _, err := appendEv(ctx, b, acct, 4, "B4"); err != nil {
		t.Fatalf("B's append after re-acquiring: %v", err)
	}
	if n := len(journaltest.Collect(t, b.ReadAll(ctx, 0, 0, journal.Filter{}, 0))); n != 5 {
		t.Fatalf("ReadAll(0) = %d events, want 5", n)
	}
	if len(fencedA) != 0 {
		t.Fatalf("OnFenced called %d more times", len(fencedA))
	}
}

// Nodes acquiring one partition at once, with different epochs: the
// highest epoch ends up the writer, every other one fails to acquire or
// is fenced at its first write, and the entity's history stays
// gap-free.
func TestConcurrentAcquire(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 4
	stores := make([]*jsstore.Store, n)
	for i := range stores {
		stores[i] = node(t, c.Connect(i%3), "race", 3, nil)
	}
	const acct = "acct/0-race"
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, st := range stores {
			wg.Go(func() {
				_, errs[i] = st.Acquire(ctx, 0, uint64(round*n+i+1), fmt.Sprint("node-", i))
			})
		}
		wg.Wait()
		top := n - 1
		if errs[top] != nil {
			t.Fatalf("round %d: the highest epoch failed to acquire: %v", round, errs[top])
		}
		for i, err := range errs[:top] {
			var fe *journal.FencedError
			if err != nil && (!errors.As(err, &fe) || fe.ByEpoch <= fe.Epoch) {
				t.Fatalf("round %d: node %d: %v; want success or *journal.FencedError by a higher epoch", round, i, err)
			}
		}
		// Everyone tries to write; only the top epoch may.
		last := journaltest.Collect(t, stores[top].Read(ctx, acct, 1, 0))
		next := uint64(len(last))
		for i, st := range stores {
			_, err := appendEv(ctx, st, acct, next, fmt.Sprint("r", round, "n", i))
			switch {
			case i == top && err != nil:
				t.Fatalf("round %d: the owner's append: %v", round, err)
			case i == top:
				next++
			case !errors.Is(err, journal.ErrNotOwner):
				t.Fatalf("round %d: node %d (lower epoch) appended: %v", round, i, err)
			}
		}
		for _, st := range stores {
			st.Release(0)
		}
	}
	evs := journaltest.Collect(t, stores[0].Read(ctx, acct, 1, 0))
	for i, e := range evs {
		if e.Sequence != uint64(i+1) || e.Type != fmt.Sprint("r", i, "n", n-1) {
			t.Fatalf("history: %+v", evs)
		}
	}
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3", len(evs))
	}
}

func TestAcquireInvalid(t *testing.T) {
	c := bustest.Start(t, 1)
	st := node(t, c.Connect(0), "inv", 1, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		partition int
		epoch     uint64
		holder    string
	}{
		{"no such partition", 2, 1, "n"},
		{"negative partition", -1, 1, "n"},
		{"epoch 0", 0, 0, "n"},
		{"no holder", 0, 1, ""},
		{"newline in holder", 0, 1, "a\nb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := st.Acquire(ctx, tc.partition, tc.epoch, tc.holder); !errors.Is(err, journal.ErrInvalid) {
				t.Fatalf("got %v; want ErrInvalid", err)
			}
		})
	}
	st.Close()
	if _, err := st.Acquire(ctx, 0, 1, "n"); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("after Close: %v; want ErrClosed", err)
	}
}

// With LeadLocallyAfter, the node that acquires a partition ends up leading
// its stream, and appends go on across the moves.
func TestAcquireLeadsLocally(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stores := make([]*jsstore.Store, 3)
	for i := range stores {
		stores[i] = nodeWith(t, jsstore.Config{Conn: c.Connect(i), Prefix: "lead", Partitions: 1, Replicas: 3, RequireOwnership: true, LeadLocallyAfter: 50 * time.Millisecond})
	}
	js := c.JetStream(0)
	leader := func() string {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, "LEAD_P0")
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return st.CachedInfo().Cluster.Leader
	}
	const acct = "acct/lead"
	next := uint64(0)
	for round, i := range []int{1, 2, 0, 2} {
		st := stores[i]
		if _, err := st.Acquire(ctx, 0, uint64(round+1), c.Name(i)); err != nil {
			t.Fatalf("round %d: node %d acquires: %v", round, i, err)
		}
		for deadline := time.Now().Add(10 * time.Second); leader() != c.Name(i); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %s acquired, %s leads the stream 10 s later", round, c.Name(i), leader())
			}
		}
		for range 3 {
			if _, err := appendEv(ctx, st, acct, next, fmt.Sprint("r", round)); err != nil {
				t.Fatalf("round %d: append %d: %v", round, next+1, err)
			}
			next++
		}
		st.Release(0)
	}
	if n := len(journaltest.Collect(t, stores[0].Read(ctx, acct, 1, 0))); uint64(n) != next {
		t.Fatalf("%d events, want %d", n, next)
	}
}
