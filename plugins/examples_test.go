package plugins

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// buildExample builds wasm-examples/LANG/NAME with LANG's build.sh and
// returns the .wasm and its manifest; it skips when the toolchain is
// missing, naming the make target that installs it.
func buildExample(t *testing.T, lang, name string, need ...string) ([]byte, string) {
	t.Helper()
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			if _, lerr := exec.LookPath(p); lerr != nil {
				t.Skipf("%s toolchain missing (%s); run `make toolchains` (wasm-examples/install-toolchains.sh)", lang, p)
			}
		}
	}
	outDir := filepath.Join(fixtureDir, "examples-"+lang)
	wasm := buildOnce(t, "example:"+lang+"/"+name, func(out string) error {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return err
		}
		cmd := exec.Command(filepath.Join(repoRoot(t), "wasm-examples", lang, "build.sh"), outDir)
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s build.sh: %v\n%s", lang, err, b)
		}
		b, err := os.ReadFile(filepath.Join(outDir, name+".wasm"))
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	man, err := os.ReadFile(filepath.Join(repoRoot(t), "wasm-examples", lang, name, name+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	return wasm, string(man)
}

func TestExampleCDenyType(t *testing.T) {
	wasm, man := buildExample(t, "c", "deny-type", "clang", "/usr/lib/wasm32-wasi/libc.a")
	dir := t.TempDir()
	writePlugin(t, dir, "deny-type", wasm, man)
	h := startHost(t, dir, nil)
	if in := h.info(t, "deny-type"); in.State != StateReady {
		t.Fatalf("%+v", in)
	}
	ctx := context.Background()
	d, err := h.Command(ctx, bankCmd("Close", "{}"))
	if err != nil || !d.Rejected || d.Reason != "commands of type Close are not accepted here" || d.Plugin != "deny-type" {
		t.Fatalf("Close: %+v, %v", d, err)
	}
	for _, typ := range []string{"Deposit", "Clos", "Closed", ""} {
		if d, err := h.Command(ctx, bankCmd(typ, "{}")); err != nil || d.Rejected {
			t.Fatalf("%q: %+v, %v", typ, d, err)
		}
	}
	if !strings.Contains(h.logs.String(), "deny-type: rejected a command of type Close") {
		t.Fatalf("log:\n%s", h.logs.String())
	}
}

func TestExampleRustMaxPayload(t *testing.T) {
	wasm, man := buildExample(t, "rust", "max-payload", "/usr/bin/rustc", "/usr/lib/rustlib/wasm32-wasi")
	dir := t.TempDir()
	writePlugin(t, dir, "max-payload", wasm, strings.Replace(man, `max_bytes = "1024"`, `max_bytes = "10"`, 1))
	h := startHost(t, dir, nil)
	if in := h.info(t, "max-payload"); in.State != StateReady {
		t.Fatalf("%+v", in)
	}
	ctx := context.Background()
	cmd := bankCmd("Deposit", `{"a":1}`)
	if d, err := h.Command(ctx, cmd); err != nil || d.Rejected || cmd.Metadata["size-checked-by"] != "max-payload" {
		t.Fatalf("small: %+v, %v, metadata %v", d, err, cmd.Metadata)
	}
	d, err := h.Command(ctx, bankCmd("Deposit", `{"amount":100}`))
	if err != nil || !d.Rejected || d.Reason != "payload of 14 bytes exceeds the limit of 10 bytes" {
		t.Fatalf("large: %+v, %v", d, err)
	}
	msg := &troupev1.TopicMessage{Topic: "accounts.opened", Payload: []byte("0123456789abc")}
	if d, err := h.Topic(ctx, msg); err != nil || !d.Rejected {
		t.Fatalf("topic: %+v, %v", d, err)
	}
	msg.Payload = []byte("ok")
	if d, err := h.Topic(ctx, msg); err != nil || d.Rejected || msg.Metadata["size-checked-by"] != "max-payload" {
		t.Fatalf("topic: %+v, %v, %v", d, err, msg.Metadata)
	}
	// Many calls: the guest's allocator and buffers hold up.
	for i := 0; i < 10000; i++ {
		if d, err := h.Command(ctx, bankCmd("Deposit", `{}`)); err != nil || d.Rejected {
			t.Fatalf("call %d: %+v, %v", i, d, err)
		}
	}
}

func TestExampleAssemblyScriptTagTopic(t *testing.T) {
	wasm, man := buildExample(t, "assemblyscript", "tag-topic", filepath.Join(repoRoot(t), "wasm-examples/assemblyscript/node_modules/.bin/asc"))
	dir := t.TempDir()
	writePlugin(t, dir, "tag-topic", wasm, man)
	h := startHost(t, dir, nil)
	if in := h.info(t, "tag-topic"); in.State != StateReady {
		t.Fatalf("%+v", in)
	}
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		msg := &troupev1.TopicMessage{Topic: "accounts.opened", Payload: []byte(`{"id":"acc-1"}`), Metadata: map[string]string{"k": "v"}}
		if d, err := h.Topic(ctx, msg); err != nil || d.Rejected {
			t.Fatalf("Topic = %+v, %v", d, err)
		}
		want := map[string]string{"k": "v", "tagged-by": "tag-topic", "tag-seq": fmt.Sprint(i)}
		if fmt.Sprint(msg.Metadata) != fmt.Sprint(want) {
			t.Fatalf("metadata = %v, want %v", msg.Metadata, want)
		}
	}
	d, err := h.Topic(ctx, &troupev1.TopicMessage{Topic: "accounts.closed"})
	if err != nil || !d.Rejected || d.Reason != "empty message on topic accounts.closed" {
		t.Fatalf("empty: %+v, %v", d, err)
	}
	if !strings.Contains(h.logs.String(), "tag-topic: rejected empty message on topic accounts.closed") {
		t.Fatalf("log:\n%s", h.logs.String())
	}
	// Commands are not hooked.
	if d, err := h.Command(ctx, bankCmd("Deposit", "")); err != nil || d.Rejected {
		t.Fatalf("Command = %+v, %v", d, err)
	}
}

// TestBuildScriptLoadsAll runs wasm-examples/build.sh (as `make wasm` does)
// and loads its output: every Go example serves; the bank demo's checks hold.
func TestBuildScriptLoadsAll(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every example; skipped with -short")
	}
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(t), "wasm-examples", "build.sh"), dir, "all")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	} else {
		t.Logf("%s", b)
	}
	h := startHost(t, dir, func(c *Config) {
		c.Getenv = func(k string) (string, bool) { return "demo-token", k == "PARTNER_API_TOKEN" }
	})
	var names []string
	for _, in := range h.List() {
		names = append(names, in.Name)
		if in.State != StateReady {
			t.Errorf("%s: %s %s", in.Name, in.State, in.LastError)
		}
	}
	t.Logf("loaded: %v", names)
	for _, n := range []string{"audit-log", "validate-amount", "rate-limit", "partner-api"} {
		h.info(t, n)
	}
	ctx := context.Background()
	d, err := h.Command(ctx, bankCmd("Withdraw", `{"amount":-5}`))
	if err != nil || !d.Rejected || d.Plugin != "validate-amount" || d.Reason != "amount must be positive, got -5" {
		t.Fatalf("withdraw -5: %+v, %v", d, err)
	}
	if !strings.Contains(h.logs.String(), "audit: command kind=account id=acc-1 type=Withdraw") {
		t.Fatal("audit-log did not log the rejected command")
	}
	if d, err := h.Command(ctx, bankCmd("Deposit", `{"amount":100}`)); err != nil || d.Rejected {
		t.Fatalf("deposit 100: %+v, %v", d, err)
	}
}
