package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The freestanding C and the WAT sidecars of docs/plugins.md, built with the
// commands and the manifest the page gives, load in a node and do what the
// page says: a Deposit is rejected with the plugin's reason, other commands
// pass.
func TestPluginsDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/plugins.md")
	if err != nil {
		t.Fatal(err)
	}
	manifest := regexp.MustCompile(`printf '(.*?)' > deny-all\.toml`).FindSubmatch(doc)
	if manifest == nil {
		t.Fatal("docs/plugins.md no longer has the printf line that writes deny-all.toml")
	}
	tests := []struct {
		lang, tool, file string
		build            *regexp.Regexp // its submatch: the tool's arguments before the output
	}{
		{"c", "clang", "deny-all.c", regexp.MustCompile(`(?m)^clang (.*) -o deny-all\.wasm deny-all\.c$`)},
		{"wat", "wat2wasm", "deny-all.wat", regexp.MustCompile(`(?m)^wat2wasm (deny-all\.wat) -o deny-all\.wasm$`)},
	}
	for _, tc := range tests {
		t.Run(tc.lang, func(t *testing.T) {
			tool, err := exec.LookPath(tc.tool)
			if err != nil {
				t.Skipf("%s not found: run `make toolchains` to test the %s example of docs/plugins.md", tc.tool, tc.lang)
			}
			code := regexp.MustCompile("(?s)```" + tc.lang + "\n(.*?)```").FindSubmatch(doc)
			build := tc.build.FindSubmatch(doc)
			if code == nil || build == nil {
				t.Fatalf("docs/plugins.md no longer has the %s example (a %s block and its %s line)", tc.lang, tc.lang, tc.tool)
			}
			src := t.TempDir()
			if err := os.WriteFile(filepath.Join(src, tc.file), code[1], 0o644); err != nil {
				t.Fatal(err)
			}
			plugins := t.TempDir()
			args := strings.Fields(string(build[1]))
			if tc.lang == "c" {
				args = append(args, "-o", filepath.Join(plugins, "deny-all.wasm"), tc.file)
			} else {
				args = append(args, "-o", filepath.Join(plugins, "deny-all.wasm"))
			}
			cmd := exec.Command(tool, args...)
			cmd.Dir = src
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s", tc.tool, strings.Join(args, " "), err, out)
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
			status, out := post(t, p.url, "CommandService/Send", `{"kind":"account","id":"a-1","type":"Deposit","payload":{"amount":5}}`)
			if status != 400 || out["code"] != "failed_precondition" || out["message"] != "rejected: plugin deny-all: nope" {
				t.Fatalf("deposit: %d %v", status, out)
			}
			send(t, p.url, `{"kind":"account","id":"a-1","type":"Close"}`) // not hooked: passes
		})
	}
}
