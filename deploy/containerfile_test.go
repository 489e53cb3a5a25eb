package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// There is no container engine on the build machines, so this test checks
// what it can without one: every flag the image passes to troupe (and every
// TROUPE_ variable its comments tell users to set) exists in the binary the
// image builds; the plugins the image builds are where the entrypoint looks;
// NATS is not opened on all interfaces without authentication; and the
// build context leaves data and build outputs out.
func TestContainerfile(t *testing.T) {
	src, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var entry []string
	var copies, runs []string
	sc := bufio.NewScanner(strings.NewReader(string(src)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "ENTRYPOINT "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "ENTRYPOINT ")), &entry); err != nil {
				t.Fatalf("ENTRYPOINT is not a JSON array: %v", err)
			}
		case strings.HasPrefix(line, "CMD "):
			t.Fatalf("CMD %q: keep every argument in ENTRYPOINT, where this test checks it", line)
		case strings.HasPrefix(line, "COPY "):
			copies = append(copies, line)
		case strings.HasPrefix(line, "RUN "):
			runs = append(runs, line)
		}
	}
	if len(entry) < 2 || entry[0] != "troupe" || entry[1] != "dev" {
		t.Fatalf("ENTRYPOINT %q: want troupe dev ...", entry)
	}

	bin := filepath.Join(t.TempDir(), "troupe")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/runtime").CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/runtime: %v\n%s", err, out)
	}
	help, err := exec.Command(bin, "dev", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("troupe dev --help: %v\n%s", err, help)
	}
	flagRE := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`)
	flags := map[string]bool{}
	for _, m := range flagRE.FindAllStringSubmatch(string(help), -1) {
		flags[m[1]] = true
	}
	if !flags["data-dir"] || !flags["plugins"] {
		t.Fatalf("could not read the flags from troupe dev --help:\n%s", help)
	}
	args := map[string]string{}
	for i := 2; i < len(entry); i++ {
		a := entry[i]
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !flags[name] {
			t.Errorf("ENTRYPOINT passes --%s, which troupe dev does not have", name)
		}
		if !ok && i+1 < len(entry) && !strings.HasPrefix(entry[i+1], "--") {
			val = entry[i+1]
		}
		args[name] = val
	}
	for _, v := range regexp.MustCompile(`TROUPE_[A-Z0-9_]+`).FindAllString(string(src), -1) {
		name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "TROUPE_")), "_", "-")
		if !flags[name] {
			t.Errorf("the Containerfile mentions %s, but troupe dev has no --%s", v, name)
		}
	}

	// NATS: on all interfaces only with authentication.
	if h := args["nats-host"]; h != "" && h != "127.0.0.1" && h != "localhost" && args["nats-token"] == "" && args["nats-nkey"] == "" {
		t.Errorf("ENTRYPOINT opens NATS on %s without --nats-token or --nats-nkey", h)
	}
	if strings.Contains(string(src), "EXPOSE") && regexp.MustCompile(`(?m)^EXPOSE .*\b4222\b`).Match(src) {
		t.Error("the image exposes 4222 while NATS listens on loopback: remove it")
	}

	// The demo plugins: built in the image, copied to the --plugins dir.
	dir := args["plugins"]
	if dir == "" {
		t.Fatal("ENTRYPOINT has no --plugins: the image would run without the demo plugins")
	}
	if !slices.ContainsFunc(copies, func(c string) bool { return strings.HasSuffix(c, " "+dir) }) {
		t.Errorf("no COPY puts the plugins at %s: %q", dir, copies)
	}
	if !slices.ContainsFunc(runs, func(r string) bool { return strings.Contains(r, "wasm-examples/build.sh") }) {
		t.Error("no RUN builds the example plugins (wasm-examples/build.sh)")
	}
	if fi, err := os.Stat("../wasm-examples/build.sh"); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("wasm-examples/build.sh is missing or not executable: %v", err)
	}

	// The build context.
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatalf("the build context needs a .dockerignore at the repository root: %v", err)
	}
	lines := strings.Fields(string(ignore))
	for _, want := range []string{"data", "bin", ".bin", "wasm-examples/build", ".git"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
}
