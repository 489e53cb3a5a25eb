package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The freestanding C sidecar of docs/plugins.md, built with the command and
// the manifest the page gives, loads in a node and does what the page says:
// a Deposit is rejected with the plugin's reason, other commands pass.
func TestPluginsDocFreestandingC(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang not found: run `make toolchains` to test the C example of docs/plugins.md")
	}
	doc, err := os.ReadFile("../../docs/plugins.md")
	if err != nil {
		t.Fatal(err)
	}
	cBlock := regexp.MustCompile("(?s)```c\n(.*?)```").FindSubmatch(doc)
	manifest := regexp.MustCompile(`printf '(.*?)' > deny-all\.toml`).FindSubmatch(doc)
	build := regexp.MustCompile(`(?m)^clang (.*) -o deny-all\.wasm deny-all\.c$`).FindSubmatch(doc)
	if cBlock == nil || manifest == nil || build == nil {
		t.Fatal("docs/plugins.md no longer has the freestanding C example (the c block, its clang line and its printf manifest)")
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "deny-all.c"), cBlock[1], 0o644); err != nil {
		t.Fatal(err)
	}
	plugins := t.TempDir()
	args := append(strings.Fields(string(build[1])), "-o", filepath.Join(plugins, "deny-all.wasm"), "deny-all.c")
	cc := exec.Command(clang, args...)
	cc.Dir = src
	if out, err := cc.CombinedOutput(); err != nil {
		t.Fatalf("clang %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	man := strings.ReplaceAll(string(manifest[1]), `\n`, "\n")
	if err := os.WriteFile(filepath.Join(plugins, "deny-all.toml"), []byte(man), 0o644); err != nil {
		t.Fatal(err)
	}

	p := startNode(t, t.TempDir(), "--plugins", plugins)
	if row := pluginRow(t, p.url, "deny-all"); !strings.Contains(strings.Join(row, " "), "ready") {
		t.Fatalf("deny-all is not ready: %v", row)
	}
	send(t, p.url, `{"kind":"account","id":"a-1","type":"Open","payload":{"owner":"ada"}}`)
	code, out := post(t, p.url, "CommandService/Send", `{"kind":"account","id":"a-1","type":"Deposit","payload":{"amount":5}}`)
	if code != 400 || out["code"] != "failed_precondition" || out["message"] != "rejected: plugin deny-all: nope" {
		t.Fatalf("deposit: %d %v", code, out)
	}
	send(t, p.url, `{"kind":"account","id":"a-1","type":"Close"}`) // not hooked: passes
}
