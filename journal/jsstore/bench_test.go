package jsstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/jsstore"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsbatch"
	"github.com/troupe-dev/troupe/journal/jsstore/ownedcopy"
)

// The raw ceilings of JetStream as a replicated journal, on three
// in-process servers with R3 streams and 200-byte messages: what the
// store's own benchmark is compared against (docs/benchmarks.md,
// "JetStream ceilings").
//
//	go test -run '^$' -bench RawJetStream -benchtime 3s -count 3 ./journal/jsstore/
//
// CAS: 1,000 entities, one subject each, each appending with
// Nats-Expected-Last-Subject-Sequence, one append in flight per entity,
// all at once; the entities in one stream (P=1) or spread over 16. An op
// is one append.
//
// Batch100: atomic batches of 100 messages (jsbatch) fenced by the
// stream's expected last sequence: one writer per stream, so one batch in
// flight per stream, 1 stream (P=1) or 16 (P=16). An op is one batch.
// Batch1000/P=1 and Batch63/P=16 are the same with 1,000 messages in
// flight in all, the offered load of the CAS and Store benchmarks.
// Every message has a Nats-Msg-Id and the first message waits for its
// ack (jsbatch's default); /SkipFirstAck sends it without waiting;
// /FirstIDOnly gives an id to the first message only (enough to refuse a
// retry of a landed batch, which is atomic); both together are the leanest
// batch jsbatch sends.
//
// The servers run in the benchmark's process: allocations and CPU are
// mostly theirs (a profile puts the client's share, jsbatch included, at
// about 6 % of CPU and 4 % of bytes allocated). Each run reports the
// process's CPU while it ran (user-cores and sys-cores: 2 in all means
// the machine's two cores were busy, and throughput is CPU per message),
// context switches per op, the share of its streams whose leader is the
// server its writer is connected to (local-leaders: stream leaders are
// placed by the servers) and, for the stores, appends per batch. With
// TROUPE_BENCH_LEAD_LOCAL=1 every stream's leadership is moved to its
// writer's server first, as a cluster node's owner does
// (jsstore.Config.LeadLocallyAfter).
func BenchmarkRawJetStream(b *testing.B) {
	leadLocally = os.Getenv("TROUPE_BENCH_LEAD_LOCAL") != ""

	c := bustest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	conns := make([]*nats.Conn, c.Size())
	jss := make([]jetstream.JetStream, c.Size())
	for i := range conns {
		conns[i] = c.Connect(i)
		js, err := jetstream.New(conns[i])
		if err != nil {
			b.Fatal(err)
		}
		jss[i] = js
	}
	data := make([]byte, 200)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	const entities = 1000
	for _, p := range []int{1, 16} {
		for _, m := range []storeMode{plainStore, timedStore, copiedStore} {
			benchStore(b, conns[0], ctx, p, data, m)
		}
	}
	for _, p := range []int{1, 16} {
		streams := createStreams(ctx, b, jss[0], fmt.Sprintf("CAS%d", p), p)
		last := make([]uint64, entities) // per entity, kept across the runs of b.N
		b.Run(fmt.Sprintf("CAS/P=%d", p), func(b *testing.B) {
			b.ReportAllocs()
			var retries atomic.Int64
			lat := runWorkers(b, entities, func(w int) (time.Duration, error) {
				js := jss[w%len(jss)]
				m := nats.NewMsg(fmt.Sprintf("%s.e%d", streams[w%p].subject, w))
				m.Data = data
				for {
					start := time.Now()
					ack, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(last[w]))
					var ae *jetstream.APIError
					if errors.As(err, &ae) && ae.ErrorCode == 10164 {
						retries.Add(1) // another append in flight, or spurious: same expectation again
						continue
					}
					if err != nil {
						return 0, fmt.Errorf("entity %d after %d: %w", w, last[w], err)
					}
					last[w] = ack.Sequence
					return time.Since(start), nil
				}
			})
			report(b, lat, 1)
			b.ReportMetric(float64(retries.Load()), "retries")
		})
	}
	for _, p := range []int{1, 16} {
		streams := createStreams(ctx, b, jss[0], fmt.Sprintf("BATCH%d", p), p)
		next := make([]int, p) // batches per stream, for unique message ids across runs
		for _, v := range []struct {
			name              string
			skip, firstIDOnly bool
			n                 int
		}{{"", false, false, 100}, {"/SkipFirstAck", true, false, 100}, {"/FirstIDOnly", false, true, 100}, {"/SkipFirstAck/FirstIDOnly", true, true, 100},
			// The store's offered load: 1,000 appends in flight over p
			// streams, one batch each.
			{"", false, false, (entities + p - 1) / p}} {
			skip := v.skip
			n := v.n
			b.Run(fmt.Sprintf("Batch%d/P=%d%s", n, p, v.name), func(b *testing.B) {
				b.ReportAllocs()
				pubs := make([]*jsbatch.Publisher, p)
				batches := make([][]*nats.Msg, p)
				for k := range pubs {
					pub, err := jsbatch.New(conns[k%len(conns)], jsbatch.Config{SkipFirstAck: skip})
					if err != nil {
						b.Fatal(err)
					}
					pubs[k] = pub
					batches[k] = make([]*nats.Msg, n)
					for i := range batches[k] {
						m := nats.NewMsg(fmt.Sprintf("%s.e%d", streams[k].subject, (i*7)%(entities/p+1)))
						m.Data = data
						batches[k][i] = m
					}
					if leadLocally {
						leadOn(ctx, b, conns[k%len(conns)], streams[k].name)
					}
					last, err := pub.LastSequence(ctx, streams[k].name)
					if err != nil {
						b.Fatal(err)
					}
					streams[k].last = last
				}
				lat := runWorkers(b, p, func(w int) (time.Duration, error) {
					st, msgs := &streams[w], batches[w]
					next[w]++
					for i, m := range msgs {
						if i > 0 && v.firstIDOnly {
							break
						}
						m.Header.Set(jsbatch.HeaderMsgID, fmt.Sprintf("%s-%d-%d", st.name, next[w], i))
					}
					start := time.Now()
					ack, err := pubs[w].Publish(ctx, st.name, st.last, msgs)
					if err != nil {
						return 0, fmt.Errorf("%s after %d: %w", st.name, st.last, err)
					}
					st.last = ack.LastSeq
					return time.Since(start), nil
				})
				report(b, lat, n)
				var local float64
				for k := range streams {
					local += localLeaders(ctx, b, conns[k%len(conns)], []string{streams[k].name})
				}
				b.ReportMetric(local/float64(len(streams)), "local-leaders")
			})
		}
	}
}

// leadLocally: TROUPE_BENCH_LEAD_LOCAL (see BenchmarkRawJetStream).
var leadLocally bool

// storeMode is how benchStore's Store is set up.
type storeMode int

const (
	plainStore  storeMode = iota // "Store": the store alone
	timedStore                   // "StoreTimes": keeping event times, as a node's store does
	copiedStore                  // "StoreCopy": a node's whole path, event times and the local copy
)

// benchStore is our store's append on the same cluster as the raw
// ceilings: one Store (one node's connection) owning every partition,
// 1,000 entities each appending one 200-byte event at a time with its
// expected sequence, all at once. An op is one append. StoreTimes keeps
// the events' times in the log (a header per event) and so fills the
// partitions' tail caches, as a cluster node's store does; StoreCopy also
// goes through the node's local copy of its shards (ownedcopy): a
// cluster node's append path.
func benchStore(b *testing.B, conn *nats.Conn, ctx context.Context, p int, data []byte, mode storeMode) {
	var (
		js  *jsstore.Store
		err error
	)
	name, prefix := [...]string{"Store", "StoreTimes", "StoreCopy"}[mode], [...]string{"bst", "bsl", "bsc"}[mode]
	prefix = fmt.Sprintf("%s%d", prefix, p)
	for start := time.Now(); time.Since(start) < 60*time.Second; time.Sleep(200 * time.Millisecond) {
		js, err = jsstore.Open(ctx, jsstore.Config{Conn: conn, Prefix: prefix, Partitions: p, Replicas: 3, RequireOwnership: true, KeepEventTimes: mode != plainStore})
		if err == nil {
			break
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	var st interface {
		journal.Store
		Acquire(context.Context, int, uint64, string) (jsstore.Fence, error)
	} = js
	if mode == copiedStore {
		oc, err := ownedcopy.Open(ownedcopy.Config{Store: js, Dir: b.TempDir()})
		if err != nil {
			js.Close()
			b.Fatal(err)
		}
		st = oc
	}
	defer st.Close() // the copy closes js too
	names := make([]string, p)
	for k := range p {
		if _, err := st.Acquire(ctx, k, 1, "bench"); err != nil {
			b.Fatal(err)
		}
		names[k] = jsstore.StreamName(js, k)
		if leadLocally {
			leadOn(ctx, b, conn, names[k])
		}
	}
	const entities = 1000
	last := make([]uint64, entities)
	// TROUPE_BENCH_GATHER: a comma-separated list of the committer's
	// longest gather (jsstore's maxGather; 0: off), each run in turn.
	gathers := []time.Duration{-1} // the store's default
	if g := os.Getenv("TROUPE_BENCH_GATHER"); g != "" {
		gathers = gathers[:0]
		for _, f := range strings.Split(g, ",") {
			d, err := time.ParseDuration(f)
			if err != nil {
				b.Fatalf("TROUPE_BENCH_GATHER: %v", err)
			}
			gathers = append(gathers, d)
		}
	}
	for _, g := range gathers {
		sub := fmt.Sprintf("%s/P=%d", name, p)
		if g >= 0 {
			sub += "/G=" + g.String()
			jsstore.SetGather(js, g)
		}
		b.Run(sub, func(b *testing.B) {
			b.ReportAllocs()
			batches := jsstore.Batches(js)
			lat := runWorkers(b, entities, func(w int) (time.Duration, error) {
				start := time.Now()
				ev := journal.Event{Type: "Deposited", Payload: data}
				if mode == timedStore {
					ev.Time = start // the copy stamps its events so
				}
				r, err := st.Append(ctx, journal.AppendRequest{
					Stream: fmt.Sprintf("acct/%d", w), Expected: last[w],
					Events: []journal.Event{ev},
				})
				if err != nil {
					return 0, err
				}
				last[w] = r.LastSequence
				return time.Since(start), nil
			})
			report(b, lat, 1)
			b.ReportMetric(localLeaders(ctx, b, conn, names), "local-leaders")
			if n := jsstore.Batches(js) - batches; n > 0 {
				b.ReportMetric(float64(b.N)/float64(n), "appends/batch")
			}
		})
	}
}

// leadOn moves the leadership of stream name to the server conn is
// connected to (as a cluster node's owner does, jsstore's
// LeadLocallyAfter) and waits until that server leads.
func leadOn(ctx context.Context, tb testing.TB, conn *nats.Conn, name string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": conn.ConnectedServerName()}})
	for localLeaders(ctx, tb, conn, []string{name}) < 1 {
		if time.Now().After(deadline) {
			tb.Fatalf("stream %s: leadership not moved to %s", name, conn.ConnectedServerName())
		}
		// An error (a replica not current yet) is retried.
		_, _ = conn.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+name, req)
		time.Sleep(200 * time.Millisecond)
	}
}

// localLeaders is the share of the streams named that the server conn
// is connected to leads.
func localLeaders(ctx context.Context, tb testing.TB, conn *nats.Conn, names []string) float64 {
	tb.Helper()
	js, err := jetstream.New(conn)
	if err != nil {
		tb.Fatal(err)
	}
	me, n := conn.ConnectedServerName(), 0
	for _, name := range names {
		st, err := js.Stream(ctx, name)
		if err != nil {
			tb.Fatal(err)
		}
		if ci := st.CachedInfo().Cluster; ci != nil && ci.Leader == me {
			n++
		}
	}
	return float64(n) / float64(len(names))
}

type benchStream struct {
	name, subject string
	last          uint64
}

// createStreams creates p R3 streams allowing atomic batches, retrying
// while a fresh cluster settles, and waits for each to have a leader.
func createStreams(ctx context.Context, tb testing.TB, js jetstream.JetStream, prefix string, p int) []benchStream {
	tb.Helper()
	out := make([]benchStream, p)
	for k := range out {
		out[k] = benchStream{name: fmt.Sprintf("%s_%d", prefix, k), subject: fmt.Sprintf("%s.%d", prefix, k)}
		cfg := jetstream.StreamConfig{
			Name: out[k].name, Subjects: []string{out[k].subject + ".>"}, Replicas: 3,
			Storage: jetstream.FileStorage, AllowAtomicPublish: true,
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err := js.CreateStream(cctx, cfg)
			if err == nil {
				var info *jetstream.StreamInfo
				info, err = st.Info(cctx)
				if err == nil && (info.Cluster == nil || info.Cluster.Leader == "") {
					err = errors.New("no leader yet")
				}
			}
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("stream %s: %v", cfg.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return out
}

// runWorkers runs b.N ops over `workers` goroutines, worker w calling op(w)
// for one op at a time, and returns every op's latency. The timer covers
// the ops only.
func runWorkers(b *testing.B, workers int, op func(w int) (time.Duration, error)) []time.Duration {
	var (
		taken atomic.Int64
		mu    sync.Mutex
		all   = make([]time.Duration, 0, b.N)
		first error
		wg    sync.WaitGroup
	)
	b.ResetTimer()
	var ru0 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
		b.Fatal(err)
	}
	for w := range workers {
		wg.Go(func() {
			var mine []time.Duration
			for taken.Add(1) <= int64(b.N) {
				d, err := op(w)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					taken.Store(int64(b.N)) // stop everyone
					break
				}
				mine = append(mine, d)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	if first != nil {
		b.Fatal(first)
	}
	// The process's CPU (the servers', the client's), as cores busy.
	var ru1 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
		b.Fatal(err)
	}
	el := b.Elapsed().Seconds()
	b.ReportMetric(float64(ru1.Utime.Nano()-ru0.Utime.Nano())/1e9/el, "user-cores")
	b.ReportMetric(float64(ru1.Stime.Nano()-ru0.Stime.Nano())/1e9/el, "sys-cores")
	b.ReportMetric(float64(ru1.Nvcsw-ru0.Nvcsw)/float64(b.N), "vcsw/op")
	b.ReportMetric(float64(ru1.Nivcsw-ru0.Nivcsw)/float64(b.N), "ivcsw/op")
	return all
}

// report adds msgs/s and the latency percentiles of one op (an append, or
// a batch of msgsPerOp).
func report(b *testing.B, lat []time.Duration, msgsPerOp int) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N*msgsPerOp)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// TestIdleStreamCost measures what idle R3 streams cost three in-process
// servers: heap and CPU per stream (all three replicas together), for 16,
// 64 and 256 streams. Heap is the live heap after a collection, less the
// same before the streams; CPU is getrusage of the process over 10 s of
// idle, less the same cluster's idle CPU without the streams.
//
//	TROUPE_LONG=1 go test -run TestIdleStreamCost -v -count 1 ./journal/jsstore/
//
// Run it in a fresh process each time: nats-server keeps memory of
// stopped servers in the process (about 80 MiB after the 256-stream
// cluster), which muddles a second run's baseline.
func TestIdleStreamCost(t *testing.T) {
	if os.Getenv("TROUPE_LONG") == "" {
		t.Skip("measurement; set TROUPE_LONG=1")
	}
	t.Cleanup(func() { goleak.VerifyNone(t) })
	const idle = 10 * time.Second
	for _, n := range []int{16, 64, 256} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := bustest.Start(t, 3)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			js := c.JetStream(0)
			// The cluster forms, then sits idle: the baseline.
			time.Sleep(2 * time.Second)
			heap0 := heapLive()
			cpu0 := idleCPU(t, idle)

			start := time.Now()
			createStreams(ctx, t, js, fmt.Sprintf("IDLE%d", n), n)
			created := time.Since(start)
			// Every stream has a leader; let elections and catch-ups end.
			time.Sleep(2 * time.Second)
			heap1 := heapLive()
			cpu1 := idleCPU(t, idle)

			heapPer := float64(heap1-heap0) / float64(n) / (1 << 20)
			cpuPer := (cpu1 - cpu0).Seconds() * 1000 / idle.Seconds() / float64(n)
			t.Logf("%d streams: created in %v; heap %.1f -> %.1f MiB, %.2f MiB per stream; idle CPU %.1f -> %.1f ms/s, %.3f ms/s per stream (3 replicas)",
				n, created.Round(100*time.Millisecond), float64(heap0)/(1<<20), float64(heap1)/(1<<20), heapPer,
				cpu0.Seconds()*1000/idle.Seconds(), cpu1.Seconds()*1000/idle.Seconds(), cpuPer)
			if heapPer <= 0 || heapPer > 16 {
				t.Errorf("heap per stream %.2f MiB: not a plausible measurement", heapPer)
			}
		})
	}
}

// heapLive is the bytes of live heap objects after a full collection.
// (HeapInuse would count whole spans, which objects of an earlier cluster
// in the same process may partly fill.)
func heapLive() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// idleCPU is the CPU time (user + system) the process spends over d.
func idleCPU(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	before := rusage(t)
	time.Sleep(d) // the measurement window, not a synchronisation
	return rusage(t) - before
}

func rusage(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
