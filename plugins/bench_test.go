package plugins

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

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
