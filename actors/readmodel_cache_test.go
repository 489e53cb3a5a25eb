package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

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
	setup := func(rt *actors.Runtime) error {
		if err := rt.Register(counterKind()); err != nil {
			return err
		}
		if err := rt.RegisterProjection(actors.Projection{
			Name: "sum", Filter: journal.Filter{Kind: "counter"},
			Apply: func(tx *actors.Tx, ev journal.Event) error {
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
		}); err != nil {
			return err
		}
		return rt.RegisterQuery(actors.Query{Name: "sums", Projection: "sum", Handle: func(_ context.Context, v *actors.View, _ json.RawMessage) (any, error) {
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
	}
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
	if !ok || hits < lookups/2 {
		t.Fatalf("row cache found %d of %d rows (has one: %v): want most", hits, lookups, ok)
	}
}

func entityKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint("e/counter/c", i)
	}
	return keys
}
