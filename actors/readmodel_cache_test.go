package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

// TestReadModelRowsStayExactAcrossPartitions sends adds from many callers
// at once into a log of several partitions, whose projection goroutines
// all write one shared row and a row per entity, read mostly from the
// projection's row cache. No update may be lost (as it would be if two
// partitions' batches applied at once over cached rows, where Badger's
// conflict check cannot see the reads), none applied twice (a batch that
// failed must leave the cache as it was), and the cache must be used.
func TestReadModelRowsStayExactAcrossPartitions(t *testing.T) {
	const parts, entities, callers, adds = 6, 24, 12, 40
	mem := journaltest.NewMemStore(journaltest.MemConfig{Partitions: parts})
	defer mem.Close()
	var (
		failed     atomic.Int64
		failedOnce sync.Map // (partition, position) of the events that failed once
	)
	setup := counterSum(
		func(tx *actors.Tx, ev journal.Event) error {
			var a Added
			if err := json.Unmarshal(ev.Payload, &a); err != nil {
				return err
			}
			var total, mine struct{ Sum, Count int }
			if _, err := tx.GetJSON("total", &total); err != nil {
				return err
			}
			total.Sum += a.N
			total.Count++
			if err := tx.SetJSON("total", total); err != nil {
				return err
			}
			// Read back what this transaction just wrote.
			var again struct{ Sum, Count int }
			if ok, err := tx.GetJSON("total", &again); err != nil || !ok || again != total {
				return fmt.Errorf("read back %+v (found %v, %v), wrote %+v", again, ok, err, total)
			}
			if _, err := tx.GetJSON("e/"+ev.Stream, &mine); err != nil {
				return err
			}
			mine.Sum += a.N
			mine.Count++
			if err := tx.SetJSON("e/"+ev.Stream, mine); err != nil {
				return err
			}
			// Every 7th event fails once, after its writes: the
			// batch is applied again and must not count them twice.
			if _, again := failedOnce.LoadOrStore([2]uint64{uint64(ev.Partition), ev.Position}, true); ev.Sequence%7 == 0 && !again {
				failed.Add(1)
				return errors.New("failing once on purpose")
			}
			// A row deleted in the transaction is gone for it.
			if err := tx.Set("scratch", []byte("x")); err != nil {
				return err
			}
			if err := tx.Delete("scratch"); err != nil {
				return err
			}
			if _, ok, err := tx.Get("scratch"); err != nil || ok {
				return fmt.Errorf("a deleted row was found (%v, %v)", ok, err)
			}
			return nil
		},
		actors.Query{Name: "sums", Projection: "sum", Handle: func(_ context.Context, v *actors.View, _ json.RawMessage) (any, error) {
			out := map[string]struct{ Sum, Count int }{}
			for _, k := range append([]string{"total"}, entityKeys(entities)...) {
				var m struct{ Sum, Count int }
				if _, err := v.GetJSON(k, &m); err != nil {
					return nil, err
				}
				out[k] = m
			}
			return out, nil
		}})
	n := actorstest.Start(t, actorstest.Config{Journal: mem, Setup: setup})
	ctx := context.Background()
	var (
		mu    sync.Mutex
		token journal.Token
		want  = map[string]int{}
		wg    sync.WaitGroup
		errs  = make(chan error, callers)
	)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range adds {
				id := fmt.Sprint("c", (c*adds+i)%entities)
				out, err := n.Send(ctx, "counter", id, Add{i + 1})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				token = token.Merge(out.Token())
				want["e/counter/"+id] += i + 1
				want["total"] += i + 1
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var got map[string]struct{ Sum, Count int }
	if _, err := n.Query(ctx, "sums", nil, token, &got); err != nil {
		t.Fatal(err, n.RT.Projections())
	}
	if g := got["total"]; g.Sum != want["total"] || g.Count != callers*adds {
		t.Fatalf("total %+v, want sum %d over %d adds", g, want["total"], callers*adds)
	}
	for _, k := range entityKeys(entities) {
		if got[k].Sum != want[k] {
			t.Fatalf("%s: sum %d, want %d", k, got[k].Sum, want[k])
		}
	}
	if failed.Load() == 0 {
		t.Fatal("no batch failed: the test did not try a failed batch")
	}
	hits, lookups, ok := actors.RowCacheStats(n.RT, "sum")
	txns, batches, _, _ := actors.CombinedStats(n.RT, "sum")
	t.Logf("row cache: %d of %d lookups found; %d transactions, %d batches, %d failed", hits, lookups, txns, batches, failed.Load())
	// Every row is read from Badger once (the total and each entity's),
	// even by a batch that failed; after that the cache has it.
	if !ok || hits+entities+1 < lookups {
		t.Fatalf("row cache found %d of %d rows (has one: %v): want all but the %d first reads", hits, lookups, ok, entities+1)
	}
}

func entityKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("e/counter/c", i)
	}
	return keys
}

// TestReadModelBatchesShareATransaction holds a read model's writer in
// Apply while other partitions' batches arrive: they wait, and are then
// applied together, in one transaction.
func TestReadModelBatchesShareATransaction(t *testing.T) {
	const parts = 4
	txns, batches, failed := heldWriter(t, parts, nil)
	// The held batch commits alone; the waiting ones in one transaction.
	if txns != 2 || batches != parts || failed != 0 {
		t.Fatalf("%d transactions applied %d batches (%d failed), want 2 transactions for %d", txns, batches, failed, parts)
	}
}

// TestReadModelBatchesTooBigTogetherAreSplit has the waiting batches
// write more together than one Badger transaction takes (each event a
// 700 KB row; the read store's transactions take about 2.5 MB): they are
// committed in parts, none fails.
func TestReadModelBatchesTooBigTogetherAreSplit(t *testing.T) {
	const parts = 5
	big := make([]byte, 700<<10)
	txns, batches, failed := heldWriter(t, parts, func(tx *actors.Tx, ev journal.Event) error {
		return tx.Set("big/"+ev.Stream, big)
	})
	if batches != parts || failed != 0 || txns < 3 {
		t.Fatalf("%d transactions applied %d batches (%d failed), want at least 3 for %d, none failed", txns, batches, failed, parts)
	}
}

// heldWriter runs a read model over a log of parts partitions: it sends a
// command to an entity of the first partition, holds the read model's
// writer in that event's Apply until a command to each other partition
// has its batch waiting, then lets it go and waits for all of them. It
// returns the transactions committed, the batches they applied and the
// batches that failed, counted from the held one's start. also, when set,
// runs in every Apply.
func heldWriter(t *testing.T, parts int, also func(*actors.Tx, journal.Event) error) (txns, batches, failed uint64) {
	t.Helper()
	mem := journaltest.NewMemStore(journaltest.MemConfig{Partitions: parts})
	defer mem.Close()
	started, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	setup := counterSum(
		func(tx *actors.Tx, ev journal.Event) error {
			if first.CompareAndSwap(false, true) {
				close(started)
				<-release
			}
			if also != nil {
				if err := also(tx, ev); err != nil {
					return err
				}
			}
			var m struct{ Count int }
			if _, err := tx.GetJSON("total", &m); err != nil {
				return err
			}
			m.Count++
			return tx.SetJSON("total", m)
		},
		actors.Query{Name: "total", Projection: "sum", Handle: func(_ context.Context, v *actors.View, _ json.RawMessage) (any, error) {
			var m struct{ Count int }
			_, err := v.GetJSON("total", &m)
			return m.Count, err
		}})
	n := actorstest.Start(t, actorstest.Config{Journal: mem, Setup: setup})
	ctx := context.Background()
	// One entity in each partition.
	ids := map[int]string{}
	for i := 0; len(ids) < parts; i++ {
		id := fmt.Sprint("c", i)
		if p := mem.PartitionOf("counter/" + id); ids[p] == "" {
			ids[p] = id
		}
	}
	var token journal.Token
	send := func(id string) {
		out, err := n.Send(ctx, "counter", id, Add{1})
		if err != nil {
			t.Fatal(err)
		}
		token = token.Merge(out.Token())
	}
	send(ids[0])
	<-started
	txns0, batches0, failed0, _ := actors.CombinedStats(n.RT, "sum")
	for p := 1; p < parts; p++ {
		send(ids[p])
	}
	actorstest.Eventually(t, 5*time.Second, func() bool {
		_, _, _, waiting := actors.CombinedStats(n.RT, "sum")
		return waiting == parts-1
	})
	close(release)
	var count int
	if _, err := n.Query(ctx, "total", nil, token, &count); err != nil || count != parts {
		t.Fatalf("total %d (%v), want %d", count, err, parts)
	}
	txns, batches, failed, _ = actors.CombinedStats(n.RT, "sum")
	return txns - txns0, batches - batches0, failed - failed0
}

// counterSum is a node's setup: the counter kind, a projection "sum" of
// the counters' events that applies them with apply, and query.
func counterSum(apply func(*actors.Tx, journal.Event) error, query actors.Query) func(*actors.Runtime) error {
	return func(rt *actors.Runtime) error {
		if err := rt.Register(counterKind()); err != nil {
			return err
		}
		if err := rt.RegisterProjection(actors.Projection{Name: "sum", Filter: journal.Filter{Kind: "counter"}, Apply: apply}); err != nil {
			return err
		}
		return rt.RegisterQuery(query)
	}
}
