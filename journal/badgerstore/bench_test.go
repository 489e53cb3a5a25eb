package badgerstore

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore/internal/codec"
)

// The append benchmarks append 200-byte events, one per append, from N
// writers each owning a stream, with SyncAlways; in the same run they
// measure the raw ceiling: Badger WriteBatches of N events of the same size
// and keys, each followed by db.Sync, with the same Badger options, so the
// ceiling is what a perfect group commit could reach with N appends in
// flight. They report events/s, the raw events/s, their ratio, and the
// append latency p50/p99.

const benchEventSize = 200

func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			b.ReportAllocs()
			perWriter := max(1, b.N/writers)
			s, err := Open(Config{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, benchEventSize)
			lat := make([][]time.Duration, writers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for w := range writers {
				lat[w] = make([]time.Duration, 0, perWriter)
				wg.Add(1)
				go func() {
					defer wg.Done()
					stream := fmt.Sprintf("bench/w%d", w)
					evs := []journal.Event{{Type: "Deposited", Payload: payload}}
					<-start
					for i := range perWriter {
						t0 := time.Now()
						_, err := s.Append(context.Background(), journal.AppendRequest{Stream: stream, Expected: uint64(i), Events: evs})
						lat[w] = append(lat[w], time.Since(t0))
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			gcs := ms.NumGC
			b.ResetTimer()
			t0 := time.Now()
			close(start)
			wg.Wait()
			elapsed := time.Since(t0)
			b.StopTimer()
			runtime.ReadMemStats(&ms)
			gcs = ms.NumGC - gcs
			cs := s.CommitStats()
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			total := perWriter * writers
			all := slices.Concat(lat...)
			slices.Sort(all)
			rate := float64(total) / elapsed.Seconds()
			raw := rawWriteBatchSync(b, total, writers)
			b.ReportMetric(rate, "events/s")
			b.ReportMetric(raw.rate, "raw-events/s")
			b.ReportMetric(rate/raw.rate, "ratio")
			// A writer of a perfect group commit waits for at least one
			// batch: the raw batch times are the floor under p50 and p99.
			b.ReportMetric(float64(raw.p50.Microseconds()), "raw-batch-p50-µs")
			b.ReportMetric(float64(raw.p99.Microseconds()), "raw-batch-p99-µs")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(cs.Events)/float64(max(cs.Syncs, 1)), "events/sync")
			// Each GC cycle during the run stalls a few groups (it takes a
			// core, and concurrent threads slow db.Sync): see
			// docs/benchmarks.md.
			b.ReportMetric(float64(gcs), "gcs")
			if testing.Verbose() {
				b.Logf("%d groups: stage %v, commit %v, sync %v; wall %v", cs.Groups, cs.StageTime, cs.CommitTime, cs.SyncTime, elapsed)
			}
		})
	}
}

// BenchmarkRawBadgerWriteBatchSync is the raw ceiling on its own: one
// WriteBatch of batch events, then db.Sync, repeated.
func BenchmarkRawBadgerWriteBatchSync(b *testing.B) {
	for _, batch := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			b.ReportAllocs()
			n := max(b.N, batch)
			b.ResetTimer()
			raw := rawWriteBatchSync(b, n, batch)
			b.ReportMetric(raw.rate, "events/s")
			b.ReportMetric(float64(raw.p50.Microseconds()), "batch-p50-µs")
			b.ReportMetric(float64(raw.p99.Microseconds()), "batch-p99-µs")
		})
	}
}

// BenchmarkRawBadgerSyncBusy shows why the committer does not overlap a
// group's db.Sync with other work: Badger's log is a memory-mapped file and
// db.Sync an msync, which write-protects each dirty page; while another
// thread of the process runs on another core, every page costs a TLB
// shootdown, which is slow in a VM. It commits transactions of 512 entries
// like a group of BenchmarkAppend, each followed by db.Sync, with 0 or 1
// goroutines spinning (no allocation, no I/O) meanwhile, and reports the
// sync latency.
func BenchmarkRawBadgerSyncBusy(b *testing.B) {
	for _, spinners := range []int{0, 1} {
		b.Run(fmt.Sprintf("spinners=%d", spinners), func(b *testing.B) {
			db, err := badger.Open(badgerOptions(Config{Dir: b.TempDir()}.WithDefaults()))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range spinners {
				wg.Add(1)
				go func() {
					defer wg.Done()
					x := 0
					for {
						select {
						case <-stop:
							return
						default:
						}
						for i := range 1000 {
							x += i * i
						}
					}
				}()
			}
			const batch = 512
			val := make([]byte, benchEventSize+40)
			var syncs []time.Duration
			b.ResetTimer()
			for seq := uint64(1); len(syncs)*batch < b.N; seq++ {
				txn := db.NewTransaction(true)
				for w := range batch {
					if err := txn.Set(codec.EventKey(nil, fmt.Sprintf("bench/w%d", w), seq), val); err != nil {
						b.Fatal(err)
					}
				}
				if err := txn.Commit(); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if err := db.Sync(); err != nil {
					b.Fatal(err)
				}
				syncs = append(syncs, time.Since(t0))
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			slices.Sort(syncs)
			b.ReportMetric(float64(syncs[len(syncs)/2].Microseconds()), "sync-p50-µs")
			b.ReportMetric(float64(syncs[len(syncs)*99/100].Microseconds()), "sync-p99-µs")
		})
	}
}

// rawWriteBatchSync writes n 200-byte values in WriteBatches of batch
// values, each followed by db.Sync, into a fresh Badger opened with the
// store's options, and returns values per second and batch times.
func rawWriteBatchSync(b *testing.B, n, batch int) rawResult {
	b.Helper()
	db, err := badger.Open(badgerOptions(Config{Dir: b.TempDir()}.WithDefaults()))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, benchEventSize)
	keys := make([][]byte, n)
	seqs := make([]uint64, batch)
	for i := range keys {
		w := i % batch
		seqs[w]++
		keys[i] = codec.EventKey(nil, fmt.Sprintf("bench/w%d", w), seqs[w])
	}
	times := make([]time.Duration, 0, (n+batch-1)/batch)
	t0 := time.Now()
	for i := 0; i < n; i += batch {
		tb := time.Now()
		wb := db.NewWriteBatch()
		for _, k := range keys[i:min(i+batch, n)] {
			if err := wb.Set(k, val); err != nil {
				b.Fatal(err)
			}
		}
		if err := wb.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := db.Sync(); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(tb))
	}
	rate := float64(n) / time.Since(t0).Seconds()
	slices.Sort(times)
	return rawResult{rate: rate, p50: times[len(times)/2], p99: times[len(times)*99/100]}
}

// rawResult is the raw ceiling: values per second and the time of one
// WriteBatch plus its sync (p50, p99), which bounds from below the latency
// of any append covered by such a batch.
type rawResult struct {
	rate     float64
	p50, p99 time.Duration
}

const replayEvents = 100_000

var replayData struct {
	once sync.Once
	dir  string
	err  error
}

// replayDir builds, once per test binary, a store holding a 100,000-event
// stream of 200-byte events interleaved with 100,000 events of 100 other
// streams, closed so that the data sits in Badger's tables.
func replayDir(b *testing.B) string {
	b.Helper()
	replayData.once.Do(func() {
		dir, err := os.MkdirTemp("", "troupe-replay-")
		if err != nil {
			replayData.err = err
			return
		}
		replayData.dir = dir
		s, err := Open(Config{Dir: dir, Sync: SyncNone})
		if err != nil {
			replayData.err = err
			return
		}
		ctx := context.Background()
		payload := make([]byte, benchEventSize)
		batch := make([]journal.Event, 1000)
		for i := range batch {
			batch[i] = journal.Event{Type: "Deposited", Payload: payload}
		}
		for i := range replayEvents / len(batch) {
			if _, err := s.Append(ctx, journal.AppendRequest{Stream: "replay/big", Expected: journal.ExpectAny, Events: batch}); err != nil {
				replayData.err = err
				return
			}
			if _, err := s.Append(ctx, journal.AppendRequest{Stream: fmt.Sprintf("replay/other%d", i%100), Expected: journal.ExpectAny, Events: batch}); err != nil {
				replayData.err = err
				return
			}
		}
		replayData.err = s.Close()
	})
	if replayData.err != nil {
		b.Fatal(replayData.err)
	}
	return replayData.dir
}

// BenchmarkReplay reads the whole 100,000-event stream per op, and in the
// same run iterates the same keys with a raw Badger prefix iterator that
// touches every value; it reports both rates and their ratio.
func BenchmarkReplay(b *testing.B) {
	dir := replayDir(b)
	s, err := Open(Config{Dir: dir, ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		n := 0
		for ev, err := range s.Read(ctx, "replay/big", 0, 0) {
			if err != nil {
				b.Fatal(err)
			}
			n += len(ev.Payload) / benchEventSize
		}
		if n != replayEvents {
			b.Fatalf("replayed %d events", n)
		}
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	rate := float64(replayEvents*b.N) / elapsed.Seconds()
	raw := rawIterate(b, s.db, b.N)
	b.ReportMetric(rate, "events/s")
	b.ReportMetric(raw, "raw-events/s")
	b.ReportMetric(rate/raw, "ratio")
}

// BenchmarkRawIterate is the raw replay ceiling on its own.
func BenchmarkRawIterate(b *testing.B) {
	db, err := badger.Open(badgerOptions(Config{Dir: replayDir(b), ReadOnly: true}.WithDefaults()))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ReportAllocs()
	b.ResetTimer()
	b.ReportMetric(rawIterate(b, db, b.N), "events/s")
}

// rawIterate iterates the replay stream's keys rounds times, reading every
// value, and returns values per second.
func rawIterate(b *testing.B, db *badger.DB, rounds int) float64 {
	b.Helper()
	prefix := codec.EventPrefix(nil, "replay/big")
	t0 := time.Now()
	for range rounds {
		n, size := 0, 0
		err := db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Seek(prefix); it.Valid(); it.Next() {
				if err := it.Item().Value(func(v []byte) error { size += len(v); return nil }); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil || n != replayEvents || size == 0 {
			b.Fatalf("raw iteration: %d values, %v", n, err)
		}
	}
	return float64(replayEvents*rounds) / time.Since(t0).Seconds()
}

// BenchmarkReadAll reads the 200,000-event global log of the replay data per
// op (one Badger lookup per event).
func BenchmarkReadAll(b *testing.B) {
	s, err := Open(Config{Dir: replayDir(b), ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		n := 0
		for _, err := range s.ReadAll(context.Background(), 0, 0, journal.Filter{}, 0) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 2*replayEvents {
			b.Fatalf("read %d events", n)
		}
	}
	b.ReportMetric(float64(2*replayEvents*b.N)/time.Since(t0).Seconds(), "events/s")
}

var interleavedData struct {
	once sync.Once
	dir  string
	err  error
}

// BenchmarkReadAllInterleaved reads a global log of 100,000 single-event
// appends spread round-robin over 1,000 streams (every lookup is a seek).
func BenchmarkReadAllInterleaved(b *testing.B) {
	interleavedData.once.Do(func() {
		dir, err := os.MkdirTemp("", "troupe-interleaved-")
		if err != nil {
			interleavedData.err = err
			return
		}
		interleavedData.dir = dir
		s, err := Open(Config{Dir: dir, Sync: SyncNone})
		if err != nil {
			interleavedData.err = err
			return
		}
		payload := make([]byte, benchEventSize)
		var wg sync.WaitGroup
		for w := range 1000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range replayEvents / 1000 {
					if _, err := s.Append(context.Background(), journal.AppendRequest{Stream: fmt.Sprintf("inter/s%d", w), Expected: uint64(i), Events: []journal.Event{{Type: "Deposited", Payload: payload}}}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		interleavedData.err = s.Close()
	})
	if interleavedData.err != nil {
		b.Fatal(interleavedData.err)
	}
	s, err := Open(Config{Dir: interleavedData.dir, ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		n := 0
		for _, err := range s.ReadAll(context.Background(), 0, 0, journal.Filter{}, 0) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != replayEvents {
			b.Fatalf("read %d events", n)
		}
	}
	b.ReportMetric(float64(replayEvents*b.N)/time.Since(t0).Seconds(), "events/s")
}
