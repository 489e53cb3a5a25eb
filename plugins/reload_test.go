package plugins

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// replaceFile writes data next to path and renames it into place, as
// build.sh does.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestHotReloadUnderLoad replaces a plugin while commands flow: the swap
// happens, no command fails, and a corrupt file then leaves the new version
// serving with List saying why. Removing the file unloads the plugin.
func TestHotReloadUnderLoad(t *testing.T) {
	allow := buildWAT(t, "allow")
	validate := buildGo(t, "wasm-examples/go/validate-amount")
	dir := t.TempDir()
	writePlugin(t, dir, "p", allow, "name = \"p\"\n[hooks]\ncommands = [\"*\"]\n[limits]\ntimeout = \"5s\" # untrusted, but this test is not about deadlines on a busy machine\n")
	h := startHost(t, dir, func(c *Config) { c.NoWatch = false; c.ReloadDebounce = 20 * time.Millisecond })
	v1 := h.info(t, "p").Version

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent, failed, rejected atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				d, err := h.Command(context.Background(), bankCmd("Deposit", `{"amount":5}`))
				sent.Add(1)
				switch {
				case err != nil || d.Err != nil:
					failed.Add(1)
					t.Errorf("command failed during reload: %+v %v", d, err)
				case d.Rejected:
					rejected.Add(1)
				}
			}
		}()
	}
	waitSent := func(n int64) {
		target := sent.Load() + n
		eventually(t, 10*time.Second, "commands to flow", func() bool { return sent.Load() >= target })
	}
	waitSent(100)

	// Swap in validate-amount under the same name: a real new version.
	replaceFile(t, filepath.Join(dir, "p.wasm"), validate)
	eventually(t, 20*time.Second, "the new version", func() bool {
		in := h.info(t, "p")
		return in.Version != v1 && in.State == StateReady
	})
	v2 := h.info(t, "p").Version
	waitSent(100)
	if d, _ := h.Command(context.Background(), bankCmd("Withdraw", `{"amount":-5}`)); !d.Rejected {
		t.Fatalf("new version not serving: %+v", d)
	}

	// A corrupt file: the old version keeps serving, List says why.
	replaceFile(t, filepath.Join(dir, "p.wasm"), []byte("\x00asm garbage"))
	eventually(t, 10*time.Second, "the failed reload to be reported", func() bool {
		return h.info(t, "p").State == StateStale
	})
	in := h.info(t, "p")
	if in.Version != v2 || !strings.Contains(in.LastError, "compile") {
		t.Fatalf("after corrupt file: %+v", in)
	}
	waitSent(100)
	if d, _ := h.Command(context.Background(), bankCmd("Withdraw", `{"amount":-5}`)); !d.Rejected {
		t.Fatalf("old version stopped serving: %+v", d)
	}

	// Removal unloads.
	os.Remove(filepath.Join(dir, "p.wasm"))
	eventually(t, 10*time.Second, "the plugin to unload", func() bool { return len(h.List()) == 0 })
	if d, _ := h.Command(context.Background(), bankCmd("Withdraw", `{"amount":-5}`)); d.Rejected {
		t.Fatalf("removed plugin still serving: %+v", d)
	}
	cancel()
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d commands failed", failed.Load(), sent.Load())
	}
	t.Logf("%d commands during the reloads, %d rejected (none failed)", sent.Load(), rejected.Load())
	if got := h.metric(t, "troupe_plugin_calls_total", map[string]string{"plugin": "p"}); got != 0 {
		t.Errorf("metrics of the removed plugin remain: calls_total = %v", got)
	}
}

// TestReloadExplicit covers Reload without the watcher: unchanged files are
// not recompiled (but still reported while they fail), a fixed file
// recovers a failed plugin.
func TestReloadExplicit(t *testing.T) {
	allow := buildWAT(t, "allow")
	dir := t.TempDir()
	writePlugin(t, dir, "p", []byte("junk"), "")
	h := startHost(t, dir, nil)
	if in := h.info(t, "p"); in.State != StateFailed {
		t.Fatalf("info = %+v", in)
	}
	ctx := context.Background()
	failed := h.info(t, "p").LastError
	if err := h.Reload(ctx); err == nil || err.Error() != failed {
		t.Fatalf("Reload of unchanged broken files = %v, want the recorded failure %q", err, failed)
	}
	if got := h.metric(t, "troupe_plugin_loads_total", map[string]string{"plugin": "p", "result": "error"}); got != 1 {
		t.Fatalf("unchanged files were reloaded: loads{error} = %v", got)
	}
	writePlugin(t, dir, "p", allow, "")
	if err := h.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if in := h.info(t, "p"); in.State != StateReady || in.LastError != "" {
		t.Fatalf("info = %+v", in)
	}
	// A manifest alone (no .wasm) is ignored; a .wasm without a manifest fails.
	os.WriteFile(filepath.Join(dir, "lonely.toml"), []byte("name = \"lonely\"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "q.wasm"), allow, 0o644)
	if err := h.Reload(ctx); err == nil || !strings.Contains(err.Error(), "no manifest q.toml") {
		t.Fatalf("Reload = %v, want missing manifest error", err)
	}
	if len(h.List()) != 2 {
		t.Fatalf("List = %+v", h.List())
	}
}
