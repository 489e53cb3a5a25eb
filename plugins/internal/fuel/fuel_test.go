package fuel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// errSpent is what the test refuel function panics with once its budget of
// chunks is spent.
var errSpent = errors.New("fuel spent")

// meter is a test host: refuel hands out chunks until limit chunks are used.
type meter struct {
	mu      sync.Mutex
	chunk   int64
	limit   int
	refuels int
}

func (m *meter) refuel(_ context.Context, _ api.Module, stack []uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refuels++
	if m.refuels > m.limit {
		panic(errSpent)
	}
	stack[0] = uint64(m.chunk)
}

// newRuntime returns a runtime with WASI and the refuel import.
func newRuntime(t testing.TB, m *meter) wazero.Runtime {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCoreFeatures(api.CoreFeaturesV2|experimental.CoreFeaturesThreads|experimental.CoreFeaturesTailCall))
	t.Cleanup(func() { rt.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	_, err := rt.NewHostModuleBuilder(ImportModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(m.refuel), nil, []api.ValueType{api.ValueTypeI64}).
		Export(ImportName).Instantiate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Host functions the fixtures import, as no-ops.
	b := rt.NewHostModuleBuilder("troupe")
	nop := api.GoModuleFunc(func(context.Context, api.Module, []uint64) {})
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().WithGoModuleFunction(nop, []api.ValueType{i32, i32, i32}, nil).Export("log")
	b.NewFunctionBuilder().WithGoModuleFunction(nop, []api.ValueType{i32, i32, i32, api.ValueTypeF64}, nil).Export("metric")
	for _, n := range []string{"config_get", "secret_get"} {
		b.NewFunctionBuilder().WithGoModuleFunction(nop, []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).Export(n)
	}
	for _, n := range []string{"http_call", "http_result"} {
		b.NewFunctionBuilder().WithGoModuleFunction(nop, []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(n)
	}
	if _, err := b.Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	return rt
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

var (
	buildMu sync.Mutex
	built   = map[string][]byte{}
)

// wat assembles a WAT file (relative to the repository root).
func wat(t testing.TB, path string, flags ...string) []byte {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := built[path]; ok {
		return b
	}
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm (wabt) not installed; run `make toolchains`")
	}
	out := filepath.Join(t.TempDir(), "m.wasm")
	args := append([]string{filepath.Join(repoRoot(), path), "-o", out}, flags...)
	if b, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm %s: %v\n%s", path, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	built[path] = b
	return b
}

// goGuest builds a Go guest (relative to the repository root).
func goGuest(t testing.TB, dir string) []byte {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := built[dir]; ok {
		return b
	}
	out := filepath.Join(t.TempDir(), "g.wasm")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-buildmode=c-shared", "-o", out, ".")
	cmd.Dir = filepath.Join(repoRoot(), dir)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	built[dir] = b
	return b
}

func instrument(t testing.TB, wasm []byte) []byte {
	t.Helper()
	out, err := Instrument(wasm)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Instrument(wasm)
	if err != nil || !bytes.Equal(out, again) {
		t.Fatalf("Instrument is not deterministic (err %v)", err)
	}
	return out
}

func fuelGlobal(t testing.TB, mod api.Module) api.MutableGlobal {
	t.Helper()
	g, ok := mod.ExportedGlobal(ExportGlobal).(api.MutableGlobal)
	if !ok {
		t.Fatalf("no mutable global %q exported", ExportGlobal)
	}
	return g
}

// TestFixturesStillWork instruments every plugin fixture and example guest
// and runs the ABI on it: the metered module compiles, instantiates, and
// answers as the original does.
func TestFixturesStillWork(t *testing.T) {
	matches, _ := filepath.Glob(filepath.Join(repoRoot(), "plugins", "testdata", "*.wat"))
	var cases []string
	for _, m := range matches {
		cases = append(cases, "wat:"+strings.TrimPrefix(m, repoRoot()+"/"))
	}
	cases = append(cases, "wat:plugins/internal/fuel/testdata/allops.wat",
		"go:plugins/testdata/goallow", "go:plugins/testdata/goecho", "go:wasm-examples/go/audit-log")
	if testing.Short() {
		cases = cases[:len(cases)-2]
	}
	for _, c := range cases {
		t.Run(filepath.Base(c), func(t *testing.T) {
			var wasm []byte
			if p, ok := strings.CutPrefix(c, "go:"); ok {
				wasm = goGuest(t, p)
			} else {
				wasm = wat(t, strings.TrimPrefix(c, "wat:"), "--enable-threads", "--enable-tail-call")
			}
			metered := instrument(t, wasm)
			ctx := context.Background()
			m := &meter{chunk: 1 << 20, limit: 200} // 2*10^8 units: enough for any fixture that ends
			rt := newRuntime(t, m)
			orig, err := rt.CompileModule(ctx, wasm)
			if err != nil {
				if strings.Contains(c, "allops") {
					t.Fatal(err)
				}
				t.Skipf("the fixture itself does not compile: %v", err)
			}
			cm, err := rt.CompileModule(ctx, metered)
			if err != nil {
				t.Fatalf("metered module does not compile: %v", err)
			}
			for name := range orig.ExportedFunctions() {
				if _, ok := cm.ExportedFunctions()[name]; !ok {
					t.Errorf("export %s lost", name)
				}
			}
			mod, err := rt.InstantiateModule(ctx, cm, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
			if strings.Contains(c, "init-loop") {
				if !errors.Is(err, errSpent) {
					t.Fatalf("instantiate = %v, want the looping _initialize stopped by its fuel", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("instantiate: %v", err)
			}
			g := fuelGlobal(t, mod)
			if f := mod.ExportedFunction("abi_version"); f != nil {
				g.Set(1 << 20)
				res, err := f.Call(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if used := (1 << 20) - int64(g.Get()); used <= 0 {
					t.Errorf("abi_version used %d fuel, want > 0", used)
				}
				_ = res
			}
			if f := mod.ExportedFunction("run"); f != nil { // allops
				g.Set(1 << 20)
				res, err := f.Call(ctx, 10)
				if err != nil {
					t.Fatal(err)
				}
				if res[0] != 285 { // sum of squares 0..9
					t.Errorf("run(10) = %d, want 285", res[0])
				}
			}
		})
	}
}

// TestLoopIsBounded: a loop that never ends refuels a bounded number of
// times and then fails, without any help from the context.
func TestLoopIsBounded(t *testing.T) {
	src := []byte("(module (func (export \"spin\") (loop $l (br $l))) (func (export \"nest\") (param i32) (result i32)" +
		" (loop $o (block $b (loop $i (br_if $b (i32.eqz (local.get 0))) (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br $i))) (br $o)) (i32.const 0)))")
	wasm := watBytes(t, src)
	metered := instrument(t, wasm)
	for _, fn := range []string{"spin", "nest"} {
		t.Run(fn, func(t *testing.T) {
			ctx := context.Background()
			m := &meter{chunk: 100000, limit: 50}
			rt := newRuntime(t, m)
			mod, err := rt.InstantiateWithConfig(ctx, metered, wazero.NewModuleConfig())
			if err != nil {
				t.Fatal(err)
			}
			fuelGlobal(t, mod).Set(100000)
			start := time.Now()
			var params []uint64
			if fn == "nest" {
				params = []uint64{3}
			}
			_, err = mod.ExportedFunction(fn).Call(ctx, params...)
			took := time.Since(start)
			if !errors.Is(err, errSpent) {
				t.Fatalf("err = %v, want %v", err, errSpent)
			}
			if m.refuels != 51 {
				t.Errorf("%d refuels, want 51", m.refuels)
			}
			t.Logf("%s: 5.1 M fuel in %v (%.2f ns per unit)", fn, took, float64(took.Nanoseconds())/5.1e6)
		})
	}
}

// TestRecursionIsBounded: calls are bounded without any loop iterating:
// "rec" starts with a loop (whose checkpoint then stands in for the entry's,
// as in functions compiled by Go), "skip" branches before its loop can run
// (so its entry keeps a checkpoint, though its loop is large enough to
// stand in for it otherwise). Both recurse into two calls down to a
// depth of 24 (33 M calls); with 50 chunks of 1,000 units they must stop
// long before.
func TestRecursionIsBounded(t *testing.T) {
	src := []byte(`(module
	  (func $rec (export "rec") (param $d i32)
	    (loop $l
	      (if (i32.eqz (local.get $d)) (then (return)))
	      (call $rec (i32.sub (local.get $d) (i32.const 1)))
	      (call $rec (i32.sub (local.get $d) (i32.const 1)))))
	  (func $skip (export "skip") (param $d i32)
	    (block $b
	      (br_if $b (i32.const 1))
	      (loop $l (br_if $l (i32.const 0)) ` + strings.Repeat("(nop) ", 100) + `))
	    (if (i32.eqz (local.get $d)) (then (return)))
	    (call $skip (i32.sub (local.get $d) (i32.const 1)))
	    (call $skip (i32.sub (local.get $d) (i32.const 1)))))`)
	metered := instrument(t, watBytes(t, src))
	for _, fn := range []string{"rec", "skip"} {
		t.Run(fn, func(t *testing.T) {
			ctx := context.Background()
			m := &meter{chunk: 1000, limit: 50}
			rt := newRuntime(t, m)
			mod, err := rt.InstantiateWithConfig(ctx, metered, wazero.NewModuleConfig())
			if err != nil {
				t.Fatal(err)
			}
			fuelGlobal(t, mod).Set(1000)
			if _, err := mod.ExportedFunction(fn).Call(ctx, 24); !errors.Is(err, errSpent) {
				t.Fatalf("err = %v, want %v", err, errSpent)
			}
		})
	}
}

// TestCostBoundsInstructions: the fuel a call spends is at least the number
// of instructions it executes, and not wildly more.
func TestCostBoundsInstructions(t *testing.T) {
	// 8 instructions per iteration inside the loop (counting its end is not
	// needed: br jumps back before it).
	src := []byte(`(module (func (export "count") (param $n i32) (result i32) (local $i i32)
	  (block $done
	    (loop $l
	      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
	      (local.set $i (i32.add (local.get $i) (i32.const 1)))
	      (br $l)))
	  (local.get $i)))`)
	metered := instrument(t, watBytes(t, src))
	ctx := context.Background()
	rt := newRuntime(t, &meter{chunk: 1 << 40, limit: 1})
	mod, err := rt.InstantiateWithConfig(ctx, metered, wazero.NewModuleConfig())
	if err != nil {
		t.Fatal(err)
	}
	g := fuelGlobal(t, mod)
	for _, n := range []uint64{0, 1, 1000} {
		g.Set(1 << 40)
		if _, err := mod.ExportedFunction("count").Call(ctx, n); err != nil {
			t.Fatal(err)
		}
		used := (1 << 40) - g.Get()
		min := 8*n + 3 // the loop's instructions, plus block, loop and the final local.get/end
		if used < min || used > 10*n+20 {
			t.Errorf("n=%d: used %d fuel, want in [%d, %d]", n, used, min, 10*n+20)
		}
	}
}

// TestRefuelKeepsState: a refuel in the middle of a loop changes nothing
// the guest computes. With one unit of fuel per refuel, nearly every
// checkpoint takes the slow path (copies of the loop's locals of every
// type, the call, the restart of the iteration, or the merge shape of a
// loop with block parameters), and a region costs more than a whole chunk,
// which must still make progress. mix(n) must equal the unmetered result.
func TestRefuelKeepsState(t *testing.T) {
	wasm := wat(t, "plugins/internal/fuel/testdata/refuel.wat")
	metered := instrument(t, wasm)
	ctx := context.Background()
	for _, chunk := range []int64{1, 7, 1 << 20} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) {
			m := &meter{chunk: chunk, limit: 1 << 30}
			rt := newRuntime(t, m)
			orig, err := rt.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName("orig"))
			if err != nil {
				t.Fatal(err)
			}
			mod, err := rt.InstantiateWithConfig(ctx, metered, wazero.NewModuleConfig().WithName("metered"))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []uint64{0, 1, 5, 1000} {
				want, err := orig.ExportedFunction("mix").Call(ctx, n)
				if err != nil {
					t.Fatal(err)
				}
				fuelGlobal(t, mod).Set(uint64(chunk))
				before := m.refuels
				got, err := mod.ExportedFunction("mix").Call(ctx, n)
				if err != nil {
					t.Fatal(err)
				}
				if got[0] != want[0] {
					t.Errorf("n=%d: mix = %#x, want %#x", n, got[0], want[0])
				}
				if refuels := m.refuels - before; chunk == 1 && refuels < int(n) {
					t.Errorf("n=%d: %d refuels, want at least one per iteration", n, refuels)
				}
			}
		})
	}
}

// TestRejects: what Instrument refuses, with which error.
func TestRejects(t *testing.T) {
	good := watBytes(t, []byte(`(module (func (export "f")))`))
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"not wasm", []byte("this is not wasm"), ErrMalformed},
		{"version 2", append([]byte("\x00asm\x02\x00\x00\x00"), good[8:]...), ErrUnsupported},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"unknown opcode", []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x0a\x05\x01\x03\x00\x06\x0b"), ErrUnsupported},
		{"exports our global", watBytes(t, []byte(`(module (global (export "troupe:fuel") i32 (i32.const 0)))`)), ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Instrument(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func watBytes(t testing.TB, src []byte) []byte {
	t.Helper()
	tool, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm (wabt) not installed; run `make toolchains`")
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(in, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(tool, in, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkInstrumentGoGuest: the rewrite of a ~2.7 MB Go guest.
func BenchmarkInstrumentGoGuest(b *testing.B) {
	wasm := goGuest(b, "wasm-examples/go/audit-log")
	b.ReportAllocs()
	b.SetBytes(int64(len(wasm)))
	for b.Loop() {
		if _, err := Instrument(wasm); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(wasm))/1e6, "MB-in")
}

func ExampleInstrument() {
	// The smallest module: (module (func (export "f"))).
	wasm := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x07\x05\x01\x01f\x00\x00\x0a\x04\x01\x02\x00\x0b")
	metered, err := Instrument(wasm)
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	refuels := 0
	_, _ = rt.NewHostModuleBuilder(ImportModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, _ api.Module, stack []uint64) {
			refuels++
			stack[0] = 1000 // another chunk
		}), nil, []api.ValueType{api.ValueTypeI64}).
		Export(ImportName).Instantiate(ctx)
	mod, err := rt.Instantiate(ctx, metered)
	if err != nil {
		fmt.Println(err)
		return
	}
	mod.ExportedGlobal(ExportGlobal).(api.MutableGlobal).Set(1000)
	_, err = mod.ExportedFunction("f").Call(ctx)
	fmt.Println(err, refuels, 1000-int64(mod.ExportedGlobal(ExportGlobal).Get()))
	// Output: <nil> 0 1
}
