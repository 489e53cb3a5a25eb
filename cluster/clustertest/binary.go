package clustertest

import (
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
)

// BinaryEnv names the environment variable that points at a prebuilt troupe
// binary; when set, Binary uses it instead of building one.
const BinaryEnv = "TROUPE_BIN"

// buildDirPrefix starts the temporary directories Binary builds into; the
// creating pid follows the prefix so that leftovers of dead processes can be
// found and removed.
const buildDirPrefix = "troupe-clustertest-"

// buildTimeout bounds `go build`; a cold build on two busy cores takes a
// minute or two.
const buildTimeout = 10 * time.Minute

var (
	buildOnce sync.Once
	builtBin  string
	builtDir  string // "" when TROUPE_BIN was used
	buildErr  error
)

// Binary returns the path of the troupe binary under test. It builds
// ./cmd/runtime once per test process (the module root is found by walking
// up from the working directory to go.mod) into a temporary directory that
// Main removes when the tests end; leftovers of test processes that died
// are removed by the next build. With TROUPE_BIN set, it returns that path
// instead. A failed build fails the test with the build's output.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv(BinaryEnv); p != "" {
			builtBin, buildErr = checkBinary(p)
			return
		}
		removeStaleBuilds()
		builtDir, builtBin, buildErr = build()
	})
	if buildErr != nil {
		t.Fatalf("clustertest: troupe binary: %v", buildErr)
	}
	return builtBin
}

func checkBinary(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s=%s: not an executable file", BinaryEnv, p)
	}
	return abs, nil
}

func build() (dir, bin string, err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	dir, err = os.MkdirTemp("", fmt.Sprintf("%s%d-", buildDirPrefix, os.Getpid()))
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "troupe")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCommand(), "build", "-o", bin, "./cmd/runtime")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("go build ./cmd/runtime in %s: %w\n%s", root, err, out)
	}
	return dir, bin, nil
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// goCommand is the go tool on PATH, else the one of the toolchain that
// built this test.
func goCommand() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// removeStaleBuilds deletes build directories whose creating process is
// gone.
func removeStaleBuilds() {
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), buildDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		if pid, ok := leadingPID(rest); ok && pid != os.Getpid() && !processAlive(pid) {
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}

// Main runs the tests of a package and then removes the binary Binary
// built. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(clustertest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
		builtDir = ""
	}
	return code
}
