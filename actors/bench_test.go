package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

// fanOut runs b.N operations over `workers` goroutines (worker w runs op(w)
// repeatedly) and reports ops/s with p50 and p99 latency.
func fanOut(b *testing.B, workers int, op func(w int) error) {
	b.Helper()
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	b.ResetTimer()
	start := time.Now()
	for w := range workers {
		n := b.N / workers
		if w < b.N%workers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, n)
			for range n {
				t0 := time.Now()
				if err := op(w); err != nil {
					errs <- err
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
}

// BenchmarkCommands measures persisted commands through the actor layer
// (sync always) beside its ceilings, in one run: the raw journal append
// (same writers, same event size, sync always) and a bare protoactor
// request round trip.
func BenchmarkCommands(b *testing.B) {
	const entities = 1000
	b.Run("actors/entities=1/sync=always", func(b *testing.B) {
		n := actorstest.Start(b, actorstest.Config{Durable: true, Setup: func(rt *actors.Runtime) error { return rt.Register(counterKind()) }})
		ctx := context.Background()
		b.ReportAllocs()
		fanOut(b, 1, func(int) error {
			c, _ := actors.NewCommand("counter", "solo", Add{1})
			_, err := n.RT.Send(ctx, c)
			return err
		})
	})
	b.Run("actors/entities=1000/sync=always", func(b *testing.B) {
		n := actorstest.Start(b, actorstest.Config{Durable: true, Setup: func(rt *actors.Runtime) error { return rt.Register(counterKind()) }})
		ctx := context.Background()
		// Warm every entity up (recovery) outside the timed part.
		for i := range entities {
			if _, err := n.Send(ctx, "counter", fmt.Sprint("e", i), Get{}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		fanOut(b, entities, func(w int) error {
			c, _ := actors.NewCommand("counter", fmt.Sprint("e", w), Add{1})
			_, err := n.RT.Send(ctx, c)
			return err
		})
	})
	b.Run("raw-journal/writers=1000/sync=always", func(b *testing.B) {
		j, err := badgerstore.Open(badgerstore.Config{Dir: filepath.Join(b.TempDir(), "j")})
		if err != nil {
			b.Fatal(err)
		}
		defer j.Close()
		ctx := context.Background()
		seq := make([]uint64, entities)
		payload := []byte(`{"N":1}`)
		b.ReportAllocs()
		fanOut(b, entities, func(w int) error {
			res, err := j.Append(ctx, journal.AppendRequest{
				Stream: fmt.Sprint("counter/e", w), Expected: seq[w],
				Events: []journal.Event{{Type: "Added", Payload: payload}},
			})
			seq[w] = res.LastSequence
			return err
		})
	})
	b.Run("bare-protoactor-request", func(b *testing.B) {
		sys := actors.NewSystem(nil)
		defer sys.Shutdown()
		pid := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			if m, ok := c.Message().(int); ok {
				c.Respond(m)
			}
		}))
		defer sys.Root.Stop(pid)
		b.ReportAllocs()
		fanOut(b, 1, func(int) error {
			_, err := sys.Root.RequestFuture(pid, 1, time.Second).Result()
			return err
		})
	})
}

// BenchmarkRecovery measures how long an entity with 10,000 events takes to
// recover: from its events alone, and from a snapshot.
func BenchmarkRecovery(b *testing.B) {
	for _, tc := range []struct {
		name          string
		snapshotEvery int
	}{{"events=10000/from-events", -1}, {"events=10000/from-snapshot", 10000}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			j, err := badgerstore.Open(badgerstore.Config{Dir: filepath.Join(dir, "journal"), Sync: badgerstore.SyncNone})
			if err != nil {
				b.Fatal(err)
			}
			evs := make([]journal.Event, 1000)
			for i := range evs {
				evs[i] = journal.Event{Type: "Added", Payload: []byte(`{"N":1}`)}
			}
			for i := range 10 {
				if _, err := j.Append(ctx, journal.AppendRequest{Stream: "counter/big", Expected: uint64(i * 1000), Events: evs}); err != nil {
					b.Fatal(err)
				}
			}
			j.Close()
			node := actorstest.Start(b, actorstest.Config{Dir: dir, Runtime: actors.Config{SnapshotEvery: tc.snapshotEvery},
				Setup: func(rt *actors.Runtime) error { return rt.Register(counterKind()) }})
			if tc.snapshotEvery > 0 {
				// One more event triggers the snapshot at 10,001.
				if _, err := node.Send(ctx, "counter", "big", Add{1}); err != nil {
					b.Fatal(err)
				}
				actorstest.Eventually(b, 5*time.Second, func() bool {
					s, err := node.Journal.LoadSnapshot(ctx, "counter/big")
					return err == nil && s.Sequence >= 10000
				})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// Recover the same stream into a new entity each time.
				if err := actors.RecoverForBench(node.RT, counterKind(), "big"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/recovery")
		})
	}
}

// BenchmarkIdleEntityMemory keeps 1,000,000 entities live and idle and
// reports the heap each one costs (default passivation timer included).
func BenchmarkIdleEntityMemory(b *testing.B) {
	const count = 1_000_000
	n := actorstest.Start(b, actorstest.Config{Setup: func(rt *actors.Runtime) error { return rt.Register(counterKind()) }})
	ctx := context.Background()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	var wg sync.WaitGroup
	const workers = 64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < count; i += workers {
				if _, err := n.Send(ctx, "counter", fmt.Sprint("idle-", i), Get{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if live := n.RT.LiveEntities(); live != count {
		b.Fatalf("%d live entities, want %d", live, count)
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/count, "heap-B/entity")
	b.ReportMetric(float64(count)/b.Elapsed().Seconds(), "spawns/s")
}

// BenchmarkProjectionCatchUp measures how fast a read model catches up
// with a log written before it started, as a node's projections do after
// a restart or a rebuild, and, event by event, as they follow a busy log:
// 1,000 counters' Added events folded into a row per counter and a
// running total (each read and written back as JSON, as the bank's
// balances are) and a line per event (written once, as a statement's).
// An op is one event applied (the log is written before the timer
// starts). partitions=1 reads a single node's Badger journal;
// partitions=8 an in-memory log of 8 partitions, as a cluster node's
// projections read 8 shards' streams.
func BenchmarkProjectionCatchUp(b *testing.B) {
	for _, parts := range []int{1, 8} {
		b.Run(fmt.Sprint("partitions=", parts), func(b *testing.B) { benchCatchUp(b, parts) })
	}
}

func benchCatchUp(b *testing.B, parts int) {
	const entities, writers = 1000, 50
	ctx := context.Background()
	dir := b.TempDir()
	var j journal.Store
	if parts == 1 {
		bj, err := badgerstore.Open(badgerstore.Config{Dir: filepath.Join(dir, "journal"), Sync: badgerstore.SyncNone})
		if err != nil {
			b.Fatal(err)
		}
		j = bj
	} else {
		mem := journaltest.NewMemStore(journaltest.MemConfig{Partitions: parts})
		defer mem.Close()
		j = mem
	}
	// One event per append, the writers taking turns over their entities,
	// so that the log interleaves the entities as a busy node's does.
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := make([]uint64, entities/writers)
			for i := w; i < b.N; i += writers {
				e := (i / writers) % len(seq)
				res, err := j.Append(ctx, journal.AppendRequest{Stream: fmt.Sprint("counter/e", w, "-", e), Expected: seq[e],
					Events: []journal.Event{{Type: "Added", Payload: []byte(`{"N":1}`)}}})
				if err != nil {
					errs <- err
					return
				}
				seq[e] = res.LastSequence
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	type sum struct{ Sum, Count int }
	rows := actors.Projection{Name: "rows", Filter: journal.Filter{Kind: "counter"}, Apply: func(tx *actors.Tx, ev journal.Event) error {
		var a Added
		if err := json.Unmarshal(ev.Payload, &a); err != nil {
			return err
		}
		for _, k := range []string{ev.Stream, "total"} {
			var s sum
			if _, err := tx.GetJSON(k, &s); err != nil {
				return err
			}
			s.Sum += a.N
			s.Count++
			if err := tx.SetJSON(k, s); err != nil {
				return err
			}
		}
		return tx.SetJSON(fmt.Sprint("line/", ev.Stream, "/", ev.Sequence), a)
	}}
	b.ReportAllocs()
	b.ResetTimer()
	cfg := actorstest.Config{Dir: dir, Setup: func(rt *actors.Runtime) error {
		if err := rt.Register(counterKind()); err != nil {
			return err
		}
		return rt.RegisterProjection(rows)
	}}
	if parts > 1 {
		cfg.Journal = j
	} else {
		j.Close() // the node opens the journal in dir
	}
	node := actorstest.Start(b, cfg)
	if err := node.RT.WaitProjection(ctx, "rows", uint64(b.N), nil); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
