package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsbatch"
)

func openOne(t *testing.T, c *bustest.Cluster, prefix string, replicas int) *jsstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		st  *jsstore.Store
		err error
	)
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
		if st, err = jsstore.Open(ctx, jsstore.Config{Conn: c.Connect(0), Prefix: prefix, Partitions: 1, Replicas: replicas}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Many entities appending at once share batches; an append whose
// expected sequence is stale fails alone, its batch mates land.
func TestGroupCommit(t *testing.T) {
	for _, tc := range []struct {
		name              string
		servers, replicas int
	}{{"one server", 1, 1}, {"three servers R3", 3, 3}} {
		t.Run(tc.name, func(t *testing.T) {
			c := bustest.Start(t, tc.servers)
			st := openOne(t, c, "gc", tc.replicas)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			const entities, rounds = 100, 3
			var wg sync.WaitGroup
			errs := make([][]error, entities)
			for e := range entities {
				errs[e] = make([]error, rounds)
				wg.Go(func() {
					stream := fmt.Sprintf("acct/%d", e)
					for r := range rounds {
						expected := uint64(r)
						if e%10 == 0 && r == 1 {
							expected = 7 // stale: fails alone
						}
						_, errs[e][r] = appendEv(ctx, st, stream, expected, fmt.Sprint("E", r))
					}
				})
			}
			wg.Wait()
			for e := range entities {
				for r := range rounds {
					var ce *journal.ConflictError
					bad := e%10 == 0 && r >= 1 // round 2 of a bad entity expects 2, finds 1
					switch {
					case bad && !errors.As(errs[e][r], &ce):
						t.Fatalf("entity %d round %d: %v; want a conflict", e, r, errs[e][r])
					case !bad && errs[e][r] != nil:
						t.Fatalf("entity %d round %d: %v", e, r, errs[e][r])
					}
				}
			}
			evs := journaltest.CheckGlobalLogGaps(t, st, true)
			if want := entities*rounds - 2*entities/10; len(evs) != want {
				t.Fatalf("%d events, want %d", len(evs), want)
			}
			// The stored messages name their batches: fewer batches than appends.
			js, err := jetstream.New(c.Connect(0))
			if err != nil {
				t.Fatal(err)
			}
			s, err := js.Stream(ctx, "GC_P0")
			if err != nil {
				t.Fatal(err)
			}
			batches := map[string]int{}
			for _, ev := range evs {
				m, err := s.GetMsg(ctx, ev.Position)
				if err != nil {
					t.Fatal(err)
				}
				batches[m.Header.Get("Nats-Batch-Id")]++
			}
			t.Logf("%d appends in %d batches", len(evs), len(batches))
			if len(batches) >= len(evs) {
				t.Fatalf("%d appends in %d batches: no group commit", len(evs), len(batches))
			}
		})
	}
}

// Concurrent appends with one idempotency key: one lands, the others
// return its result as a duplicate.
func TestGroupCommitIdempotency(t *testing.T) {
	c := bustest.Start(t, 1)
	st := openOne(t, c, "gci", 1)
	ctx := context.Background()
	const n = 30
	res := make([]journal.AppendResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res[i], errs[i] = st.Append(ctx, journal.AppendRequest{Stream: "acct/k", Expected: journal.ExpectAny,
				Events: []journal.Event{journaltest.Ev("E", "")}, IdempotencyKey: "key", Reply: []byte("r")})
		})
	}
	wg.Wait()
	first := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !res[i].Duplicate {
			first++
		}
		if res[i].LastPosition != res[0].LastPosition || string(res[i].Reply) != "r" {
			t.Fatalf("result %d: %+v; result 0: %+v", i, res[i], res[0])
		}
	}
	if first != 1 {
		t.Fatalf("%d appends were not duplicates, want 1", first)
	}
	if evs := journaltest.Collect(t, st.Read(ctx, "acct/k", 1, 0)); len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
}

// Appends too many for one batch together are split at append
// boundaries; each stays atomic.
func TestGroupCommitSplits(t *testing.T) {
	c := bustest.Start(t, 1)
	st := openOne(t, c, "gcs", 1)
	ctx := context.Background()
	evs := make([]journal.Event, 999)
	for i := range evs {
		evs[i] = journaltest.Ev("E", "x")
	}
	var wg sync.WaitGroup
	res := make([]journal.AppendResult, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			res[i], errs[i] = st.Append(ctx, journal.AppendRequest{Stream: fmt.Sprintf("big/%d", i), Events: evs, IdempotencyKey: "k"})
		})
	}
	wg.Wait()
	for i := range 4 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if res[i].LastPosition-res[i].FirstPosition != 998 || res[i].LastSequence != 999 {
			t.Fatalf("append %d: %+v", i, res[i])
		}
	}
	if got := len(journaltest.CheckGlobalLogGaps(t, st, true)); got != 4*999 {
		t.Fatalf("%d events, want %d", got, 4*999)
	}
	_, err := st.Append(ctx, journal.AppendRequest{Stream: "big/x", Events: append(evs, journaltest.Ev("E", ""))})
	var tl *journal.TooLargeError
	if !errors.As(err, &tl) || tl.Limit != 999 {
		t.Fatalf("an append of 1,000 events: %v; want *journal.TooLargeError", err)
	}
}

// An entity looks its command's idempotency key up before the handler
// runs, then appends with it: the append does not read the log for the
// key again, and a later look-up of a key this writer recorded is
// answered from what it knows. A key recorded by another writer is still
// found (the look-up of an unknown key always reads the log).
func TestIdempotentThenAppendReadsTheKeyOnce(t *testing.T) {
	c := bustest.Start(t, 1)
	st := openOne(t, c, "idonce", 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ev := []journal.Event{{Type: "Deposited", Payload: []byte(`{"amount":1}`)}}
	if _, err := st.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: 0, Events: ev, IdempotencyKey: "k0"}); err != nil {
		t.Fatal(err)
	}
	leaderReads := func() uint64 { _, l := jsstore.ReadCounts(st); return l }
	for i := 1; i <= 3; i++ {
		key := fmt.Sprintf("k%d", i)
		l0 := leaderReads()
		if _, ok, err := st.Idempotent(ctx, "acct/1", key); ok || err != nil {
			t.Fatalf("Idempotent(%s) = %v, %v before its append", key, ok, err)
		}
		if got := leaderReads() - l0; got != 1 {
			t.Fatalf("Idempotent(%s) of an unknown key read the log %d times, want 1", key, got)
		}
		res, err := st.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: uint64(i), Events: ev, IdempotencyKey: key, Reply: []byte(key)})
		if err != nil || res.Duplicate || res.LastSequence != uint64(i+1) {
			t.Fatalf("Append(%s) = %+v, %v", key, res, err)
		}
		if got := leaderReads() - l0; got != 1 {
			t.Fatalf("Idempotent then Append(%s) read the log %d times, want 1", key, got)
		}
		again, ok, err := st.Idempotent(ctx, "acct/1", key)
		if !ok || err != nil || !again.Duplicate || again.LastSequence != res.LastSequence || string(again.Reply) != key {
			t.Fatalf("Idempotent(%s) after its append = %+v, %v, %v", key, again, ok, err)
		}
		if got := leaderReads() - l0; got != 1 {
			t.Fatalf("Idempotent(%s) of a key this writer recorded read the log (%d reads in all, want 1)", key, got)
		}
	}
	// Another writer's record (a second Store on the same streams, as a
	// new owner after a failover would be) is found by both.
	other := openOne(t, c, "idonce", 1)
	if _, ok, err := other.Idempotent(ctx, "acct/1", "k2"); !ok || err != nil {
		t.Fatalf("another store's Idempotent(k2) = %v, %v", ok, err)
	}
	if _, ok, err := st.Idempotent(ctx, "acct/1", "k9"); ok || err != nil {
		t.Fatal(ok, err)
	}
	res, err := other.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: journal.ExpectAny, Events: ev, IdempotencyKey: "k9"})
	if err != nil || res.Duplicate {
		t.Fatalf("other's Append(k9) = %+v, %v", res, err)
	}
	// st learnt k9 was absent before other recorded it; its append with
	// k9 must not land (the fence moved: it fails, or finds the key).
	res, err = st.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: journal.ExpectAny, Events: ev, IdempotencyKey: "k9"})
	if err == nil && !res.Duplicate {
		t.Fatalf("a stale writer appended k9 a second time: %+v", res)
	}
	t.Logf("the stale writer's append of k9: %+v, %v", res, err)
}

// An append whose key the caller made up and never sent before
// (KeyUnused) reads nothing from the log for it, and the key is recorded
// all the same: a repeat without the hint is answered as a repeat. A
// stream the store has no head for is read once (its head), not for the
// key.
func TestAppendWithAnUnusedKeyDoesNotLookItUp(t *testing.T) {
	c := bustest.Start(t, 1)
	st := openOne(t, c, "idunused", 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ev := []journal.Event{{Type: "Deposited", Payload: []byte(`{"amount":1}`)}}
	journaltest.MustAppend(t, st, "acct/1", 0, ev...)
	leaderReads := func() uint64 { _, l := jsstore.ReadCounts(st); return l }
	for i := 1; i <= 3; i++ {
		key := fmt.Sprintf("fresh-%d", i)
		l0 := leaderReads()
		res, err := st.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: uint64(i), Events: ev,
			IdempotencyKey: key, Reply: []byte(key), KeyUnused: true})
		if err != nil || res.Duplicate || res.LastSequence != uint64(i+1) {
			t.Fatalf("Append(%s, unused) = %+v, %v", key, res, err)
		}
		if got := leaderReads() - l0; got != 0 {
			t.Fatalf("Append(%s) with an unused key read the log %d times, want 0", key, got)
		}
		again, err := st.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: journal.ExpectAny, Events: ev, IdempotencyKey: key})
		if err != nil || !again.Duplicate || again.LastSequence != res.LastSequence || string(again.Reply) != key {
			t.Fatalf("the repeat of %s = %+v, %v; want the first append's result as a repeat", key, again, err)
		}
	}
	// Another store (a new owner after a failover) finds the keys in the
	// log.
	other := openOne(t, c, "idunused", 1)
	for i := 1; i <= 3; i++ {
		r, ok, err := other.Idempotent(ctx, "acct/1", fmt.Sprintf("fresh-%d", i))
		if !ok || err != nil || r.LastSequence != uint64(i+1) {
			t.Fatalf("another store's Idempotent(fresh-%d) = %+v, %v, %v", i, r, ok, err)
		}
	}
	if n := len(journaltest.Collect(t, other.Read(ctx, "acct/1", 1, 0))); n != 4 {
		t.Fatalf("acct/1 has %d events, want 4 (the repeats appended nothing)", n)
	}
}

// A batch whose outcome was unknown (its ack and the leader's answer
// lost) and that had landed counts in LastPosition once the Store learns
// it landed: from its idempotency record (the retry of the append with the
// same key is answered with the events' positions, which a reader with
// that token waits for; it would otherwise wait for the next append), or
// when the next write settles it.
func TestSettledBatchAdvancesThePosition(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The owner: no watcher moves its position, only its own writes.
	st := openStore(t, c.Connect(0), jsstore.Config{Prefix: "settle", Partitions: 1, RequireOwnership: true})
	if _, err := st.Acquire(ctx, 0, 1, "owner"); err != nil {
		t.Fatal(err)
	}
	journaltest.MustAppend(t, st, "a/1", 0, journaltest.Ev("E", "1"))
	lost := map[string]bool{"publish": true, "resolve": true}
	var mu sync.Mutex
	jsstore.SetPublishHook(st, func(op string, ack jsbatch.Ack, err error) (jsbatch.Ack, error) {
		mu.Lock()
		defer mu.Unlock()
		if lost[op] {
			lost[op] = false
			return jsbatch.Ack{}, fmt.Errorf("%w: the answer was lost (test)", jsbatch.ErrUnknownOutcome)
		}
		return ack, err
	})
	defer jsstore.SetPublishHook(st, nil)
	req := journal.AppendRequest{Stream: "a/2", Events: []journal.Event{journaltest.Ev("E", "2"), journaltest.Ev("E", "3")}, IdempotencyKey: "k"}
	before := st.LastPosition(0)
	if _, err := st.Append(ctx, req); !errors.Is(err, jsbatch.ErrUnknownOutcome) {
		t.Fatalf("first append: %v, want an unknown outcome", err)
	}
	r, err := st.Append(ctx, req)
	if err != nil || !r.Duplicate || r.LastPosition <= before {
		t.Fatalf("the append again with its key: %+v, %v; want a duplicate after position %d", r, err, before)
	}
	if got := st.LastPosition(0); got < r.LastPosition {
		t.Fatalf("LastPosition %d after the landed batch's events at %d-%d", got, r.FirstPosition, r.LastPosition)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if _, err := st.WaitPosition(wctx, 0, r.LastPosition-1); err != nil {
		t.Fatalf("waiting for the landed events: %v", err)
	}
	if evs := journaltest.Collect(t, st.ReadAll(ctx, 0, r.FirstPosition, journal.Filter{}, 0)); len(evs) != 2 {
		t.Fatalf("read %d events of the landed batch, want 2", len(evs))
	}

	// The next write settles that batch first (the retry was answered
	// from its record); then again, and now the next write settles the
	// batch, an append whose expected sequence is stale: it appends
	// nothing itself.
	journaltest.MustAppend(t, st, "a/4", 0, journaltest.Ev("E", "6"))
	mu.Lock()
	lost["publish"], lost["resolve"] = true, true
	mu.Unlock()
	before = st.LastPosition(0)
	if _, err := st.Append(ctx, journal.AppendRequest{Stream: "a/3", Events: []journal.Event{journaltest.Ev("E", "4")}}); !errors.Is(err, jsbatch.ErrUnknownOutcome) {
		t.Fatalf("append to a/3: %v, want an unknown outcome", err)
	}
	var conflict *journal.ConflictError
	if _, err := st.Append(ctx, journal.AppendRequest{Stream: "a/3", Expected: 0, Events: []journal.Event{journaltest.Ev("E", "5")}}); !errors.As(err, &conflict) || conflict.Actual != 1 {
		t.Fatalf("append to a/3 expecting it empty: %v, want a conflict (the first landed)", err)
	}
	if got := st.LastPosition(0); got <= before {
		t.Fatalf("LastPosition %d after the settled batch, %d before it", got, before)
	}
}

// An idempotency record whose events would lie after it (damaged, or
// another writer's) is an error naming the stream and its position: its
// positions are never handed out as a token, nor moved LastPosition.
func TestIdempotencyRecordWithImpossiblePositions(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := openStore(t, c.Connect(0), jsstore.Config{Prefix: "badidem", Partitions: 1})
	journaltest.MustAppend(t, st, "a/1", 0, journaltest.Ev("E", "1"))
	before := st.LastPosition(0)
	ack, err := c.JetStream(0).Publish(ctx, jsstore.IdemSubject(st, "a/1", "k"), []byte(`{"fs":2,"ls":2,"fp":1000000,"lp":1000000}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = st.Idempotent(ctx, "a/1", "k")
	var ce *journal.CorruptError
	if !errors.As(err, &ce) || ce.Stream != "a/1" || ce.Position != ack.Sequence || !strings.Contains(err.Error(), "not before the record") {
		t.Fatalf("Idempotent on a record with impossible positions: %v", err)
	}
	if got := st.LastPosition(0); got != before {
		t.Fatalf("LastPosition %d after the bad record, %d before", got, before)
	}
}

// A committer gathers its next batch only after a busy batch (8 appends
// or more): then it waits for as many as were answered and queued, at
// most a quarter of the round trip, bounded.
func TestGatherFor(t *testing.T) {
	for _, tc := range []struct {
		name             string
		answered, queued int
		rtt, max         time.Duration
		want             int
		wait             time.Duration
	}{
		{"one writer", 1, 0, 8 * time.Millisecond, 5 * time.Millisecond, 1, 0},
		{"a few, some waiting", 7, 3, 8 * time.Millisecond, 5 * time.Millisecond, 1, 0},
		{"nothing landed", 0, 9, 8 * time.Millisecond, 5 * time.Millisecond, 1, 0},
		{"off", 31, 31, 8 * time.Millisecond, 0, 1, 0},
		{"busy", 31, 31, 8 * time.Millisecond, 5 * time.Millisecond, 62, 2 * time.Millisecond},
		{"busy, none waiting", 8, 0, 8 * time.Millisecond, 5 * time.Millisecond, 8, 2 * time.Millisecond},
		{"slow round trip", 31, 31, time.Second, 5 * time.Millisecond, 62, 5 * time.Millisecond},
		{"at most a batch", 900, 400, 8 * time.Millisecond, 5 * time.Millisecond, jsbatch.MaxMessages, 2 * time.Millisecond},
	} {
		want, wait := jsstore.GatherFor(tc.answered, tc.queued, tc.rtt, tc.max)
		if want != tc.want || wait != tc.wait {
			t.Errorf("%s: want %d for %v; want %d for %v", tc.name, want, wait, tc.want, tc.wait)
		}
	}
}
