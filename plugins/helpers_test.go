package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

// Test fixtures are built once per package run and shared: Go guests take
// seconds to build and half a second to compile cold, so every test uses the
// same build directory and wazero compilation cache.
var (
	fixtureDir string // built .wasm files
	cacheDir   string // shared wazero compilation cache
	buildMu    sync.Mutex
	built      = map[string]string{} // source -> .wasm path, or "skip:<why>"
)

func TestMain(m *testing.M) {
	var err error
	fixtureDir, err = os.MkdirTemp("", "troupe-plugins-fixtures-")
	if err != nil {
		panic(err)
	}
	// The compilation cache outlives the run (like Go's build cache): a Go
	// guest compiles in ~0.5 s, several seconds under -race, and every test
	// would pay it. wazero keys entries by module hash and wazero version.
	cacheDir = filepath.Join(fixtureDir, "cache")
	if dir, err := os.UserCacheDir(); err == nil {
		cacheDir = filepath.Join(dir, "troupe", "plugins-test-wazero")
	}
	code := m.Run()
	os.RemoveAll(fixtureDir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// buildGo builds the Go plugin in dir (relative to the repository root) with
// GOOS=wasip1, once per test binary.
func buildGo(t testing.TB, dir string) []byte {
	t.Helper()
	return buildOnce(t, "go:"+dir, func(out string) error {
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		cmd := exec.Command(gobin, "build", "-buildmode=c-shared", "-o", out, ".")
		cmd.Dir = filepath.Join(repoRoot(t), dir)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", dir, err, b)
		}
		return nil
	})
}

// buildWAT assembles plugins/testdata/NAME.wat with wabt's wat2wasm.
func buildWAT(t testing.TB, name string) []byte {
	t.Helper()
	return buildOnce(t, "wat:"+name, func(out string) error {
		tool, err := exec.LookPath("wat2wasm")
		if err != nil {
			return errSkip("wat2wasm (wabt) not installed; run `make toolchains` (wasm-examples/install-toolchains.sh)")
		}
		src := filepath.Join(repoRoot(t), "plugins", "testdata", name+".wat")
		if b, err := exec.Command(tool, src, "-o", out).CombinedOutput(); err != nil {
			return fmt.Errorf("wat2wasm %s: %v\n%s", name, err, b)
		}
		return nil
	})
}

type errSkip string

func (e errSkip) Error() string { return string(e) }

func buildOnce(t testing.TB, key string, build func(out string) error) []byte {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	path, ok := built[key]
	if !ok {
		out := filepath.Join(fixtureDir, strings.NewReplacer(":", "_", "/", "_").Replace(key)+".wasm")
		err := build(out)
		var skip errSkip
		switch {
		case errors.As(err, &skip):
			path = "skip:" + string(skip)
		case err != nil:
			t.Fatal(err)
		default:
			path = out
		}
		built[key] = path
	}
	if strings.HasPrefix(path, "skip:") {
		t.Skip(path[5:])
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writePlugin puts NAME.wasm and NAME.toml into dir. An empty manifest
// gets a default sidecar manifest hooking every command.
func writePlugin(t testing.TB, dir, name string, wasm []byte, manifest string) {
	t.Helper()
	if manifest == "" {
		manifest = fmt.Sprintf("name = %q\n[hooks]\ncommands = [\"*\"]\n", name)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".toml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".wasm"), wasm, 0o644); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type testHost struct {
	*Host
	dir  string
	logs *logBuffer
	reg  *prometheus.Registry
}

// startHost starts a host on dir (a fresh temp dir when empty) with the
// shared compilation cache; it is closed when the test ends.
func startHost(t testing.TB, dir string, mod func(*Config)) *testHost {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	cfg := Config{
		Dir:      dir,
		CacheDir: cacheDir,
		Node:     "test-node",
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:  reg,
		NoWatch:  true, // tests that watch turn it back on
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &testHost{Host: h, dir: dir, logs: logs, reg: reg}
}

func (h *testHost) info(t testing.TB, name string) Info {
	t.Helper()
	for _, in := range h.List() {
		if in.Name == name {
			return in
		}
	}
	t.Fatalf("plugin %s not listed; list: %+v", name, h.List())
	return Info{}
}

// metric returns the value of a counter or gauge series, 0 when absent.
func (h *testHost) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
