package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// buildPlugins builds the Go example plugins into a fresh directory.
func buildPlugins(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("../../wasm-examples/build.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("wasm-examples/build.sh: %v\n%s", err, out)
	}
	return dir
}

func pluginRow(t *testing.T, url, name string) []string {
	t.Helper()
	out, stderr, code := cli(t, url, "plugins", "list")
	if code != 0 {
		t.Fatalf("plugins list: %d %s", code, stderr)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return f
		}
	}
	t.Fatalf("plugins list has no %s:\n%s", name, out)
	return nil
}

func TestPluginsInTheNode(t *testing.T) {
	plugins := buildPlugins(t)
	t.Setenv("PARTNER_API_TOKEN", "test-token") // the partner-api ambassador's secret
	p := startNode(t, t.TempDir(), "--plugins", plugins)
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Open","payload":{"owner":"ada"}}`)
	send(t, p.url, `{"kind":"account","id":"acc-1","type":"Deposit","payload":{"amount":100}}`)

	// validate-amount rejects a withdrawal of -5 with its reason.
	code, out := post(t, p.url, "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Withdraw","payload":{"amount":-5}}`)
	if code != 400 || !strings.Contains(out["message"].(string), "plugin validate-amount: amount must be positive, got -5") {
		t.Fatalf("withdraw -5: %d %v", code, out)
	}
	// The audit log shows each command.
	waitFor(t, 5*time.Second, func() bool {
		logs := p.logs.String()
		return strings.Contains(logs, "audit: command kind=account id=acc-1 type=Open") &&
			strings.Contains(logs, "audit: command kind=account id=acc-1 type=Deposit") &&
			strings.Contains(logs, "audit: command kind=account id=acc-1 type=Withdraw")
	})
	for _, name := range []string{"audit-log", "validate-amount", "rate-limit", "partner-api"} {
		if row := pluginRow(t, p.url, name); !strings.Contains(strings.Join(row, " "), "ready") {
			t.Fatalf("%s is not ready: %v", name, row)
		}
	}

	// Replace a plugin file while commands flow: the swap fails no command.
	before := pluginRow(t, p.url, "validate-amount")[1]
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				// Fresh accounts, so that rate-limit (per entity) never trips.
				id := fmt.Sprintf("swap-%d-%d", w, i)
				for _, body := range []string{
					fmt.Sprintf(`{"kind":"account","id":%q,"type":"Open","payload":{}}`, id),
					fmt.Sprintf(`{"kind":"account","id":%q,"type":"Deposit","payload":{"amount":1}}`, id),
				} {
					code, out := post(t, p.url, "CommandService/Send", body)
					sent.Add(1)
					if code != 200 {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Sprint(code, out))
					}
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, func() bool { return sent.Load() > 50 })
	manifest := filepath.Join(plugins, "validate-amount.toml")
	m, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	// A new version: the same code with a changed manifest (a new limit).
	tmp := manifest + ".tmp"
	if err := os.WriteFile(tmp, append(m, []byte("\n# v2\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, manifest); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return pluginRow(t, p.url, "validate-amount")[1] != before })
	n := sent.Load()
	waitFor(t, 10*time.Second, func() bool { return sent.Load() > n+50 })
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d commands failed during the swap; first: %v", f, sent.Load(), firstErr.Load())
	}

	// A corrupt file dropped in leaves the old version serving, and
	// `troupe plugins list` says why.
	serving := pluginRow(t, p.url, "validate-amount")[1]
	if err := os.WriteFile(filepath.Join(plugins, "validate-amount.wasm.tmp"), []byte("\x00asm garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(plugins, "validate-amount.wasm.tmp"), filepath.Join(plugins, "validate-amount.wasm")); err != nil {
		t.Fatal(err)
	}
	var row []string
	waitFor(t, 20*time.Second, func() bool {
		row = pluginRow(t, p.url, "validate-amount")
		return row[1] == serving && strings.Contains(strings.Join(row, " "), "stale")
	})
	list, _, _ := cli(t, p.url, "plugins", "list")
	if !strings.Contains(list, "plugin validate-amount: load: compile: invalid") {
		t.Fatalf("plugins list does not say why:\n%s", list)
	}
	code, out = post(t, p.url, "CommandService/Send", `{"kind":"account","id":"acc-1","type":"Withdraw","payload":{"amount":-5}}`)
	if code != 400 || !strings.Contains(out["message"].(string), "amount must be positive") {
		t.Fatalf("the old validate-amount no longer serves: %d %v", code, out)
	}
	// An explicit reload of a newly corrupted file fails and says which,
	// whether or not the watcher tried the file first; so does the next
	// one, while the file stays broken.
	if err := os.WriteFile(filepath.Join(plugins, "rate-limit.wasm"), []byte("not wasm at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		reloaded, stderr, rc := cli(t, p.url, "plugins", "reload")
		if rc == 0 || !strings.Contains(stderr, "plugin rate-limit: load: compile:") {
			t.Fatalf("plugins reload of a broken rate-limit: exit %d\n%s\n%s", rc, reloaded, stderr)
		}
	}
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(strings.Join(pluginRow(t, p.url, "rate-limit"), " "), "stale") })
	p.stop(10 * time.Second)
}
