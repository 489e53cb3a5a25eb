package plugins

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// within runs f and fails the test when it does not return within d.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Errorf("%s did not finish within %v", what, d)
		<-done // the goroutine is the test's: wait for it (every f here is bounded)
		t.Logf("%s finished after %v", what, time.Since(start))
	}
}

// TestTrustedLoopIsBounded: a trusted sidecar that loops forever on one
// command type, called from 1, 2 (as many as cores here) and 8 goroutines.
// While the calls loop, the process stays responsive: an HTTP health
// check, unrelated commands and a garbage collection (which must stop
// every goroutine, those in wasm included) all finish promptly. Then each
// looping call fails with a timeout naming the plugin (or passes, by
// policy), and its instance is discarded.
func TestTrustedLoopIsBounded(t *testing.T) {
	wasm := buildWAT(t, "loop")
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }))
	defer health.Close()
	for _, n := range []int{1, 2, 8} {
		for _, policy := range []string{"reject", "pass"} {
			t.Run(fmt.Sprintf("%d-calls/%s", n, policy), func(t *testing.T) {
				dir := t.TempDir()
				// With 1 and 2 calls the trusted defaults apply (1 s or
				// 10^9 units of fuel). With 8 looping calls on 2 cores the
				// checks below take seconds on a loaded machine (the
				// collection alone took up to 3.8 s at load average 4-9,
				// and up to 2.8 s with the first version of the fuel
				// rewriter), so the calls get a longer bound: they must
				// outlive the checks for the test to prove anything.
				limits, bound, gcBound := "", time.Second, 2*time.Second
				if n > 2 {
					limits, bound, gcBound = "[limits]\ntimeout = \"10s\"\nfuel = 40000000000\n", 10*time.Second, 6*time.Second
				}
				writePlugin(t, dir, "spin", wasm, fmt.Sprintf("name = \"spin\"\ntrusted = true\non_failure = %q\n%s[hooks]\ncommands = [\"Spin\"]\n", policy, limits))
				h := startHost(t, dir, nil)
				if in := h.info(t, "spin"); in.State != StateReady || in.Trusted != true {
					t.Fatalf("%+v", in)
				}
				type result struct {
					d    Decision
					err  error
					took time.Duration
				}
				results := make(chan result, n)
				start := time.Now()
				for range n {
					go func() {
						s := time.Now()
						d, err := h.Command(context.Background(), bankCmd("Spin", ""))
						results <- result{d, err, time.Since(s)}
					}()
				}
				eventually(t, 5*time.Second, "the looping calls to start", func() bool {
					return h.metric(t, "troupe_plugin_calls_total", map[string]string{"plugin": "spin", "hook": "command"}) >= float64(n)
				})
				within(t, 2*time.Second, "GET /healthz", func() error {
					resp, err := http.Get(health.URL)
					if err != nil {
						return err
					}
					resp.Body.Close()
					return nil
				})
				within(t, 2*time.Second, "an unrelated command", func() error {
					d, err := h.Command(context.Background(), bankCmd("Deposit", "{}"))
					if err != nil || d.Rejected {
						return fmt.Errorf("%+v, %v", d, err)
					}
					return nil
				})
				// A collection stops every goroutine, those in wasm too: it
				// waits for each to reach a refuel (a stop takes well under
				// a millisecond at 2^18 units per refuel). runtime.GC's wall
				// time is the whole cycle, whose mark workers share the 2
				// cores with 8 busy goroutines: 0.5-1.9 s with 8 spinning Go
				// goroutines instead of plugins, depending on the load
				// (BenchmarkGCWithLoopingCalls).
				within(t, gcBound, "a garbage collection", func() error {
					s := time.Now()
					runtime.GC()
					t.Logf("runtime.GC took %v with %d looping calls", time.Since(s), n)
					return nil
				})
				if len(results) == n {
					t.Fatalf("the looping calls ended before the checks (after %v): the test proves nothing", time.Since(start))
				}
				for range n {
					var r result
					select {
					case r = <-results:
					case <-time.After(bound + 10*time.Second):
						t.Fatalf("a looping call did not end within %v", bound+10*time.Second)
					}
					if r.err != nil {
						t.Fatalf("err = %v; failures must go through the policy", r.err)
					}
					// The bound is the timeout or the fuel, whichever comes
					// first: 10^9 units (the trusted default) are 0.4-0.9 s
					// of this loop here, so the fuel may end it first.
					if r.took < time.Second/4 || r.took > bound+4*time.Second {
						t.Errorf("a looping call took %v; its bound is %v or its fuel", r.took, bound)
					}
					switch policy {
					case "reject":
						var be *BoundError
						if !r.d.Rejected || r.d.Plugin != "spin" || !errors.Is(r.d.Err, ErrTimeout) || !errors.As(r.d.Err, &be) ||
							!strings.Contains(r.d.Err.Error(), "plugin spin: plugins: deadline exceeded: call ") {
							t.Fatalf("Decision = %+v (err %v), want a timeout of plugin spin", r.d, r.d.Err)
						}
					case "pass":
						if r.d.Rejected {
							t.Fatalf("Decision = %+v, want passed", r.d)
						}
					}
				}
				v := h.chain.Load().byName["spin"]
				v.mu.Lock()
				live, free := v.live, len(v.free)
				v.mu.Unlock()
				if live != 0 || free != 0 {
					t.Errorf("%d live, %d pooled instances after only interrupted calls, want none", live, free)
				}
				if got := h.metric(t, "troupe_plugin_failures_total", map[string]string{"plugin": "spin", "reason": "timeout"}); got != float64(n) {
					t.Errorf("failures_total{timeout} = %v, want %d", got, n)
				}
				// The plugin still serves: a command it does not loop on.
				if d, err := h.Command(context.Background(), bankCmd("Deposit", "{}")); err != nil || d.Rejected {
					t.Fatalf("after the loops: %+v, %v", d, err)
				}
			})
		}
	}
}

// TestLoadTimeLoops: a trusted plugin whose _initialize, or whose answer to
// the load-time probe, loops forever fails to load within the load bound
// (here 2 s: ten times the 100 ms timeout, at least 2 s) with a timeout; the
// other plugins load, and the plugin's state is "loading" meanwhile.
func TestLoadTimeLoops(t *testing.T) {
	good := buildWAT(t, "allow")
	for _, fixture := range []string{"init-loop", "probe-loop"} {
		t.Run(fixture, func(t *testing.T) {
			dir := t.TempDir()
			writePlugin(t, dir, "good", good, "")
			h := startHost(t, dir, nil)
			writePlugin(t, dir, "bad", buildWAT(t, fixture),
				// Fuel of 10^11 per call (10^12 for a load) outlasts the
				// 2 s bound on any machine here: the default (10^10 for a
				// load) ran out first, in 1.95 s, on a fast CI machine.
				"name = \"bad\"\ntrusted = true\n[hooks]\ncommands = [\"*\"]\n[limits]\ntimeout = \"100ms\"\nfuel = 100000000000\n")
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- h.Reload(context.Background()) }()
			eventually(t, 5*time.Second, "the plugin to show as loading", func() bool {
				for _, in := range h.List() {
					if in.Name == "bad" {
						return in.State == StateLoading && in.State.String() == "loading"
					}
				}
				return false
			})
			var err error
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("Reload did not return within 15 s")
			}
			took := time.Since(start)
			if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "plugin bad: load:") ||
				!strings.Contains(err.Error(), "deadline exceeded: load ran") {
				t.Fatalf("Reload = %v, want a load timeout of plugin bad", err)
			}
			if took < 2*time.Second || took > 8*time.Second {
				t.Errorf("the load took %v, want about its 2 s bound", took)
			}
			if in := h.info(t, "bad"); in.State != StateFailed {
				t.Fatalf("%+v", in)
			}
			if in := h.info(t, "good"); in.State != StateReady {
				t.Fatalf("%+v", in)
			}
			if d, err := h.Command(context.Background(), bankCmd("Deposit", "{}")); err != nil || d.Rejected {
				t.Fatalf("%+v, %v", d, err)
			}
			if got := h.budget.inUse(); got != 512*pageSize { // good's one instance
				t.Errorf("budget in use = %d, want %d (the failed loads released theirs)", got, 512*pageSize)
			}
		})
	}
}

// TestLoadFuelIsBounded: a load-time loop with little fuel is ended when its
// fuel (ten calls' worth) is spent, long before the time bound, and says so.
func TestLoadFuelIsBounded(t *testing.T) {
	dir := t.TempDir()
	h := startHost(t, dir, nil)
	writePlugin(t, dir, "bad", buildWAT(t, "probe-loop"),
		"name = \"bad\"\ntrusted = true\n[hooks]\ncommands = [\"*\"]\n[limits]\ntimeout = \"1s\"\nfuel = 1000000\n")
	start := time.Now()
	err := h.Reload(context.Background())
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "plugin bad: load:") ||
		!strings.Contains(err.Error(), "load spent its fuel (10000000 units, limits.fuel)") {
		t.Fatalf("Reload = %v, want the load's fuel spent", err)
	}
	if took > 5*time.Second {
		t.Errorf("the load took %v, want far less than its 10 s time bound", took)
	}
	if in := h.info(t, "bad"); in.State != StateFailed {
		t.Fatalf("%+v", in)
	}
}

// TestHostWaitIsBounded: a plugin that sleeps in a host call (the clock
// capability's nanosleep) is ended at its deadline, not when it wakes.
func TestHostWaitIsBounded(t *testing.T) {
	wasm := buildGo(t, "plugins/testdata/goslow")
	dir := t.TempDir()
	writePlugin(t, dir, "slow", wasm, "name = \"slow\"\ntrusted = true\n[hooks]\ncommands = [\"*\"]\n"+
		"[limits]\nmemory_pages = 256\ntimeout = \"300ms\"\n[capabilities]\nclock = true\n[capabilities.config]\nsleep = \"1h\"\n")
	h := startHost(t, dir, nil)
	start := time.Now()
	d, err := h.Command(context.Background(), bankCmd("Sleep", ""))
	took := time.Since(start)
	if err != nil || !d.Rejected || !errors.Is(d.Err, ErrTimeout) || !strings.Contains(d.Reason, "deadline exceeded: call ran") {
		t.Fatalf("Sleep: %+v (%v), %v", d, d.Err, err)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("the sleeping call took %v, want about its 300 ms bound", took)
	}
	if d, err := h.Command(context.Background(), bankCmd("Deposit", "{}")); err != nil || d.Rejected {
		t.Fatalf("%+v, %v", d, err)
	}
}

// TestMemoryBudget: the node-wide budget refuses a plugin whose pool can
// never fit and one whose first instance does not fit in what is left,
// naming the budget and the demand; a pool that cannot grow makes callers
// wait for a busy instance instead of failing them.
func TestMemoryBudget(t *testing.T) {
	allow := buildWAT(t, "allow")
	dir := t.TempDir()
	man := func(name string, pages, instances int) string {
		return fmt.Sprintf("name = %q\n[hooks]\ncommands = [\"*\"]\n[limits]\nmemory_pages = %d\nmax_instances = %d\n", name, pages, instances)
	}
	writePlugin(t, dir, "huge", allow, man("huge", 65536, 4))
	writePlugin(t, dir, "a", allow, man("a", 512, 2)) // 32 MiB an instance
	writePlugin(t, dir, "b", allow, man("b", 512, 1))
	h := startHost(t, dir, func(c *Config) { c.MemoryBudget = 64 << 20 })
	in := h.info(t, "huge")
	if in.State != StateFailed || !strings.Contains(in.LastError, "plugin huge needs 16 GiB for its pool (limits.max_instances 4 × limits.memory_pages 65536), the node-wide plugin memory budget is 64 MiB") {
		t.Fatalf("huge: %+v", in)
	}
	for _, n := range []string{"a", "b"} {
		if in := h.info(t, n); in.State != StateReady {
			t.Fatalf("%s: %+v", n, in)
		}
	}
	if got := h.budget.inUse(); got != 64<<20 {
		t.Fatalf("in use %d, want 64 MiB", got)
	}
	// The budget is full: a small plugin's first instance does not fit.
	writePlugin(t, dir, "c", allow, man("c", 16, 1))
	err := h.Reload(context.Background())
	var be *BudgetError
	if !errors.As(err, &be) || be.Plugin != "c" || be.Demand != 1<<20 ||
		!strings.Contains(err.Error(), "plugin c needs 1 MiB for its first instance, the node-wide plugin memory budget is 64 MiB with 64 MiB in use") {
		t.Fatalf("Reload = %v", err)
	}

	// a's pool would need a second instance, which does not fit: a second
	// caller waits for the first instance instead of failing.
	va := h.chain.Load().byName["a"]
	inst, err := va.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		d, err := h.Command(context.Background(), bankCmd("Deposit", "{}"))
		if err == nil && d.Rejected {
			err = fmt.Errorf("rejected: %+v", d)
		}
		got <- err
	}()
	eventually(t, 5*time.Second, "the pool-growth warning", func() bool {
		return strings.Contains(h.logs.String(), "plugin pool cannot grow within the memory budget")
	})
	select {
	case err := <-got:
		t.Fatalf("the second caller did not wait: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	va.release(inst, true)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting caller did not get the released instance")
	}
	h.Close()
	if got := h.budget.inUse(); got != 0 {
		t.Fatalf("after Close, %d bytes of the budget are still reserved", got)
	}
}

// TestNonRegularFiles: a FIFO named x.wasm and a symlink to /dev/zero are
// skipped with a reason, without blocking the watcher or Reload; a symlink
// to a regular file loads; plugins dropped afterwards still load.
func TestNonRegularFiles(t *testing.T) {
	allow := buildWAT(t, "allow")
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "x.wasm"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	writeFile(t, filepath.Join(dir, "x.toml"), "name = \"x\"\n")
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "z.wasm")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "z.toml"), "name = \"z\"\n")
	// A symlink to a regular file, as Kubernetes ConfigMaps make them.
	real := t.TempDir()
	writePlugin(t, real, "linked", allow, "")
	for _, ext := range []string{".wasm", ".toml"} {
		if err := os.Symlink(filepath.Join(real, "linked"+ext), filepath.Join(dir, "linked"+ext)); err != nil {
			t.Fatal(err)
		}
	}
	var h *testHost
	within(t, 10*time.Second, "Start", func() error {
		h = startHost(t, dir, func(c *Config) { c.NoWatch = false; c.ReloadDebounce = 20 * time.Millisecond })
		return nil
	})
	if h == nil {
		t.FailNow()
	}
	for name, want := range map[string]string{"x": "x.wasm is a named pipe (FIFO), not a regular file: skipped", "z": "z.wasm is a character device, not a regular file: skipped"} {
		if in := h.info(t, name); in.State != StateFailed || !strings.Contains(in.LastError, want) {
			t.Errorf("%s: %+v, want failed with %q", name, in, want)
		}
	}
	if in := h.info(t, "linked"); in.State != StateReady {
		t.Fatalf("linked: %+v", in)
	}
	// The watcher is not stuck: a plugin dropped in now loads.
	writePlugin(t, dir, "later", allow, "")
	eventually(t, 10*time.Second, "the plugin dropped after the FIFO to load", func() bool {
		for _, in := range h.List() {
			if in.Name == "later" {
				return in.State == StateReady
			}
		}
		return false
	})
	within(t, 5*time.Second, "Reload", func() error {
		err := h.Reload(context.Background())
		if err == nil || !strings.Contains(err.Error(), "named pipe") || !strings.Contains(err.Error(), "character device") {
			return fmt.Errorf("Reload = %v, want the skipped files named", err)
		}
		return nil
	})
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestManifestZeroLimits: a limit written as 0 is refused, naming it.
func TestManifestZeroLimits(t *testing.T) {
	for _, key := range []string{"memory_pages", "max_instances", "max_output", "max_response", "fuel"} {
		_, err := ParseManifest([]byte(fmt.Sprintf("name = \"x\"\n[limits]\n%s = 0\n", key)))
		if err == nil || !strings.Contains(err.Error(), "limits."+key+" = 0 makes no sense") {
			t.Errorf("%s = 0: err = %v", key, err)
		}
	}
	m, err := ParseManifest([]byte("name = \"x\"\ntrusted = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Limits.Timeout != DefaultTrustedTimeout || m.Limits.Fuel != DefaultFuel {
		t.Fatalf("trusted defaults: %+v", m.Limits)
	}
}

// TestStateNames: every state has a name.
func TestStateNames(t *testing.T) {
	for s := StateLoading; s <= StateFailed; s++ {
		if strings.HasPrefix(s.String(), "State(") {
			t.Errorf("state %d has no name", int(s))
		}
	}
}

// TestBoundAllocatesNothing: bounding a call allocates nothing: a bounded
// sidecar call allocates no more than the unbounded call it replaced (the
// node's hot path must not feed the garbage collector per plugin call).
func TestBoundAllocatesNothing(t *testing.T) {
	wasm := buildWAT(t, "allow")
	allocs := map[meterMode]float64{}
	for _, mode := range []meterMode{meterNone, meterFuel} {
		dir := t.TempDir()
		writePlugin(t, dir, "p", wasm, "name = \"p\"\ntrusted = true\n[hooks]\ncommands = [\"*\"]\n")
		h, err := New(Config{Dir: dir, CacheDir: cacheDir, NoWatch: true})
		if err != nil {
			t.Fatal(err)
		}
		h.mode = mode
		if err := h.Start(context.Background()); err != nil {
			h.Close()
			t.Fatal(err)
		}
		ctx := context.Background()
		cmd := benchCommand()
		allocs[mode] = testing.AllocsPerRun(500, func() {
			if d, err := h.Command(ctx, cmd); err != nil || d.Rejected {
				t.Fatal(d, err)
			}
		})
		h.Close()
	}
	t.Logf("allocations per call: unbounded %v, bounded %v", allocs[meterNone], allocs[meterFuel])
	if allocs[meterFuel] > allocs[meterNone] {
		t.Errorf("a bounded call allocates %v times, the unbounded one %v", allocs[meterFuel], allocs[meterNone])
	}
}
