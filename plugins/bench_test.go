package plugins

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Run all of them in one go (the ceiling and the deliveries in the same
// run, as docs/benchmarks.md reports):
//
//	go test -run '^$' -bench . -benchtime 1s -count 5 ./plugins/

var payload200 = bytes.Repeat([]byte("x"), 200)

// benchCeiling is the raw ceiling: a bare wazero call with 200 bytes in
// (written into guest memory) and 200 bytes out (copied out of it), the
// guest touching each byte. No protocol, no pool, no metrics.
func benchCeiling(b *testing.B, wasm []byte) {
	ctx := context.Background()
	cache := wazero.NewCompilationCache()
	defer cache.Close(ctx)
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCompilationCache(cache))
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	mod, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
	if err != nil {
		b.Fatal(err)
	}
	res, err := mod.ExportedFunction("alloc").Call(ctx, 4096)
	if err != nil {
		b.Fatal(err)
	}
	in := uint32(res[0])
	handle := mod.ExportedFunction("handle")
	mem := mod.Memory()
	out := make([]byte, 0, 4096)
	stack := make([]uint64, 2)
	b.ReportAllocs()
	b.SetBytes(200)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !mem.Write(in, payload200) {
			b.Fatal("write")
		}
		stack[0], stack[1] = uint64(in), 200
		if err := handle.CallWithStack(ctx, stack); err != nil {
			b.Fatal(err)
		}
		o, ok := mem.Read(uint32(stack[0]>>32), uint32(stack[0]))
		if !ok || len(o) != 200 {
			b.Fatal("read")
		}
		out = append(out[:0], o...)
	}
}

func BenchmarkCeilingWAT(b *testing.B) { benchCeiling(b, buildWAT(b, "echo")) }
func BenchmarkCeilingGo(b *testing.B)  { benchCeiling(b, buildGo(b, "plugins/testdata/goecho")) }

func benchCommand() *troupev1.Command {
	return &troupev1.Command{
		CommandId: "0190b1c2-7d3e-7a61-9f00-3b2c1d0e9f8a", Kind: "account", EntityId: "acc-1", Type: "Deposit",
		Payload: payload200, ContentType: "application/json",
	}
}

// benchSidecar measures one delivery through one sidecar with Host.Command:
// encode the request (a command with a 200-byte payload), copy it into the
// guest, call, decode the verdict, apply it, count metrics. mode says how
// the call is bounded: meterFuel is the node's only mode; meterNone and
// meterCloseOnDone are the trusted and untrusted calls before issue 15,
// kept to measure the bound against them in the same run.
func benchSidecar(b *testing.B, wasm []byte, trusted bool, parallel bool, mode meterMode) {
	dir := b.TempDir()
	writePlugin(b, dir, "p", wasm, fmt.Sprintf("name = \"p\"\ntrusted = %v\n[limits]\nmemory_pages = 4096\n[hooks]\ncommands = [\"*\"]\n", trusted))
	h, err := New(Config{Dir: dir, CacheDir: cacheDir, NoWatch: true})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	h.mode = mode
	if err := h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	if in := h.List(); len(in) != 1 || in[0].State != StateReady {
		b.Fatalf("%+v", in)
	}
	ctx := context.Background()
	b.ReportAllocs()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			cmd := benchCommand()
			for pb.Next() {
				if d, err := h.Command(ctx, cmd); err != nil || d.Rejected {
					b.Fatal(d, err)
				}
			}
		})
	} else {
		cmd := benchCommand()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if d, err := h.Command(ctx, cmd); err != nil || d.Rejected {
				b.Fatal(d, err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// Bounded (fuel and deadline, the node's only mode), trusted and untrusted.
func BenchmarkSidecarWAT(b *testing.B) { benchSidecar(b, buildWAT(b, "allow"), true, false, meterFuel) }
func BenchmarkSidecarWATUntrusted(b *testing.B) {
	benchSidecar(b, buildWAT(b, "allow"), false, false, meterFuel)
}
func BenchmarkSidecarWATParallel(b *testing.B) {
	benchSidecar(b, buildWAT(b, "allow"), true, true, meterFuel)
}
func BenchmarkSidecarGo(b *testing.B) {
	benchSidecar(b, buildGo(b, "plugins/testdata/goallow"), true, false, meterFuel)
}
func BenchmarkSidecarGoUntrusted(b *testing.B) {
	benchSidecar(b, buildGo(b, "plugins/testdata/goallow"), false, false, meterFuel)
}
func BenchmarkSidecarGoParallel(b *testing.B) {
	benchSidecar(b, buildGo(b, "plugins/testdata/goallow"), true, true, meterFuel)
}

// Before issue 15: the unbounded trusted call, and the untrusted call
// bounded by wazero's WithCloseOnContextDone.
func BenchmarkSidecarWATUnbounded(b *testing.B) {
	benchSidecar(b, buildWAT(b, "allow"), true, false, meterNone)
}
func BenchmarkSidecarWATCloseOnDone(b *testing.B) {
	benchSidecar(b, buildWAT(b, "allow"), false, false, meterCloseOnDone)
}
func BenchmarkSidecarGoUnbounded(b *testing.B) {
	benchSidecar(b, buildGo(b, "plugins/testdata/goallow"), true, false, meterNone)
}
func BenchmarkSidecarGoCloseOnDone(b *testing.B) {
	benchSidecar(b, buildGo(b, "plugins/testdata/goallow"), false, false, meterCloseOnDone)
}

// BenchmarkNoPlugins is the host's overhead with no sidecar hooked.
func BenchmarkNoPlugins(b *testing.B) {
	h := startHost(b, "", nil)
	cmd := benchCommand()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := h.Command(ctx, cmd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadGoWarmCache is the time to load (compile from the warm disk
// cache, instantiate, self-check) a Go plugin into a new Host.
func BenchmarkLoadGoWarmCache(b *testing.B) {
	wasm := buildGo(b, "wasm-examples/go/audit-log")
	dir := b.TempDir()
	writePlugin(b, dir, "audit-log", wasm, "name = \"audit-log\"\ntrusted = true\n[hooks]\ncommands = [\"*\"]\n")
	cache := b.TempDir()
	warm := func() time.Duration {
		h, err := New(Config{Dir: dir, CacheDir: cache})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := h.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if in := h.List(); len(in) != 1 || in[0].State != StateReady {
			b.Fatalf("%+v", in)
		}
		h.Close()
		return took
	}
	cold := warm() // fills the cache
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		total += warm()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "warm-ms")
	b.ReportMetric(float64(cold.Microseconds())/1000, "cold-ms")
}

// benchBoundCost measures the bound against the unbounded call it replaced
// on a noisy machine: four hosts of the same plugin in one process
// (unbounded trusted as before issue 15, bounded trusted, bounded
// untrusted, and untrusted under WithCloseOnContextDone as before), called
// in alternating blocks of 200 commands. Each b.N iteration is one round of
// the four blocks; the reported figures are medians over rounds of the
// per-command time, and the median of the per-round ratio bounded /
// unbounded, which cancels most of the load that other processes put on the
// machine.
func benchBoundCost(b *testing.B, wasm []byte) {
	type variant struct {
		name    string
		trusted bool
		mode    meterMode
		h       *Host
		ns      []float64
	}
	vs := []*variant{
		{name: "unbounded", trusted: true, mode: meterNone},
		{name: "bounded", trusted: true, mode: meterFuel},
		{name: "untrusted", trusted: false, mode: meterFuel},
		{name: "closeondone", trusted: false, mode: meterCloseOnDone},
	}
	for _, v := range vs {
		dir := b.TempDir()
		writePlugin(b, dir, "p", wasm, fmt.Sprintf("name = \"p\"\ntrusted = %v\n[limits]\nmemory_pages = 4096\n[hooks]\ncommands = [\"*\"]\n", v.trusted))
		h, err := New(Config{Dir: dir, CacheDir: cacheDir, NoWatch: true})
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		h.mode = v.mode
		if err := h.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		if in := h.List(); len(in) != 1 || in[0].State != StateReady {
			b.Fatalf("%+v", in)
		}
		v.h = h
	}
	const block = 200
	ctx := context.Background()
	cmd := benchCommand()
	var ratios, untrustedRatios []float64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, v := range vs {
			start := time.Now()
			for range block {
				if d, err := v.h.Command(ctx, cmd); err != nil || d.Rejected {
					b.Fatal(d, err)
				}
			}
			v.ns = append(v.ns, float64(time.Since(start).Nanoseconds())/block)
		}
		ratios = append(ratios, vs[1].ns[i]/vs[0].ns[i])
		untrustedRatios = append(untrustedRatios, vs[2].ns[i]/vs[0].ns[i])
	}
	b.StopTimer()
	for _, v := range vs {
		b.ReportMetric(median(v.ns), v.name+"-ns")
	}
	b.ReportMetric(100*(median(ratios)-1), "bound-added-%")
	b.ReportMetric(100*(median(untrustedRatios)-1), "untrusted-added-%")
	b.ReportMetric(median(vs[3].ns)/median(vs[0].ns), "closeondone-x")
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func BenchmarkBoundCostWAT(b *testing.B) { benchBoundCost(b, buildWAT(b, "allow")) }
func BenchmarkBoundCostGo(b *testing.B) {
	benchBoundCost(b, buildGo(b, "plugins/testdata/goallow"))
}

// BenchmarkGCWithLoopingCalls measures what 8 calls looping in wasm on
// this machine's cores do to Go's garbage collector, for several fuel
// chunks (the work between two refuels, the only points where a goroutine
// in wasm can be stopped), against 8 pure Go goroutines spinning the same
// way. Each op is one runtime.GC() while the 8 loop. Reported: the wall
// time of runtime.GC() (gc-ms, the whole cycle), and from runtime/metrics
// the longest stop-the-world of the op's collections, from the decision to
// stop until every P stopped (stw-stopping-max-ms), and until the world ran
// again (stw-total-max-ms); both are the upper bounds of the histogram
// buckets.
//
//	go test -run '^$' -bench GCWithLoopingCalls -benchtime 5x ./plugins/
func BenchmarkGCWithLoopingCalls(b *testing.B) {
	const loopers = 8
	for _, chunk := range []int64{0, 1 << 14, 1 << 18, 1 << 22} {
		name := fmt.Sprintf("wasm/chunk=%d", chunk)
		if chunk == 0 {
			name = "go-spinners"
		}
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var stop atomic.Bool
			// Stop the loopers (the next refuel sees ctx canceled) and wait
			// for them, before the host closes.
			defer func() {
				cancel()
				stop.Store(true)
				wg.Wait()
			}()
			if chunk == 0 {
				var sink atomic.Uint64
				for range loopers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						n := uint64(0)
						for !stop.Load() {
							for i := 0; i < 1000; i++ {
								n = n*6364136223846793005 + 1442695040888963407
							}
						}
						sink.Add(n)
					}()
				}
			} else {
				dir := b.TempDir()
				writePlugin(b, dir, "spin", buildWAT(b, "loop"), "name = \"spin\"\ntrusted = true\n[limits]\ntimeout = \"10m\"\nfuel = 1000000000000\n[hooks]\ncommands = [\"Spin\"]\n")
				reg := prometheus.NewRegistry()
				h, err := New(Config{Dir: dir, CacheDir: cacheDir, NoWatch: true, Metrics: reg})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { h.Close() }) // after the deferred stop above
				h.chunk = chunk
				if err := h.Start(ctx); err != nil {
					b.Fatal(err)
				}
				for range loopers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						// Ends when ctx is canceled (the next refuel sees it).
						_, _ = h.Command(ctx, bankCmd("Spin", ""))
					}()
				}
				th := &testHost{Host: h, reg: reg}
				eventually(b, 10*time.Second, "the looping calls to start", func() bool {
					return th.metric(b, "troupe_plugin_calls_total", map[string]string{"plugin": "spin", "hook": "command"}) >= loopers
				})
			}
			time.Sleep(100 * time.Millisecond) // let them all spin
			samples := []rtmetrics.Sample{{Name: "/sched/pauses/stopping/gc:seconds"}, {Name: "/sched/pauses/total/gc:seconds"}}
			var gcMS, stopMax, totalMax []float64
			b.ResetTimer()
			for range b.N {
				rtmetrics.Read(samples)
				// Read reuses the histograms' memory: keep the counts.
				before := [][]uint64{slices.Clone(samples[0].Value.Float64Histogram().Counts), slices.Clone(samples[1].Value.Float64Histogram().Counts)}
				start := time.Now()
				runtime.GC()
				gcMS = append(gcMS, float64(time.Since(start).Microseconds())/1000)
				rtmetrics.Read(samples)
				stopMax = append(stopMax, 1000*histMax(before[0], samples[0].Value.Float64Histogram()))
				totalMax = append(totalMax, 1000*histMax(before[1], samples[1].Value.Float64Histogram()))
			}
			b.StopTimer()
			b.ReportMetric(median(gcMS), "gc-ms")
			b.ReportMetric(slices.Max(stopMax), "stw-stopping-max-ms")
			b.ReportMetric(slices.Max(totalMax), "stw-total-max-ms")
		})
	}
}

// histMax returns the upper bound of the highest bucket that gained counts
// from before to after (0 when none did).
func histMax(before []uint64, after *rtmetrics.Float64Histogram) float64 {
	for i := len(after.Counts) - 1; i >= 0; i-- {
		if after.Counts[i] > before[i] {
			return after.Buckets[i+1]
		}
	}
	return 0
}
