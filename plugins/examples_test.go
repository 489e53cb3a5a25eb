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
