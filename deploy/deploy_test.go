package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/troupe-dev/troupe/cluster/clustertest"
)

// TestMain removes the troupe binary clustertest.Binary builds.
func TestMain(m *testing.M) { os.Exit(clustertest.Main(m)) }

// devFlags are the flags of `troupe dev`: name -> whether it takes a value.
type devFlags map[string]bool

var (
	flagsOnce sync.Once
	flagsVal  devFlags
	flagsErr  error
)

// troupeDevFlags reads the flags from the help of the binary under test.
func troupeDevFlags(t *testing.T) devFlags {
	t.Helper()
	bin := clustertest.Binary(t)
	flagsOnce.Do(func() {
		help, err := exec.Command(bin, "dev", "--help").CombinedOutput()
		if err != nil {
			flagsErr = fmt.Errorf("troupe dev --help: %v\n%s", err, help)
			return
		}
		// "  --name type   text" takes a value; "  --name      text" (a
		// bool) does not.
		re := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)( \S+)?`)
		flagsVal = devFlags{}
		for _, m := range re.FindAllStringSubmatch(string(help), -1) {
			flagsVal[m[1]] = m[2] != ""
		}
		if !flagsVal["gossip"] || !flagsVal["join"] || flagsVal["nats-no-listen"] {
			flagsErr = fmt.Errorf("could not read the flags from troupe dev --help:\n%s", help)
		}
	})
	if flagsErr != nil {
		t.Fatal(flagsErr)
	}
	return flagsVal
}

// entrypoint is the Containerfile's ENTRYPOINT: troupe dev and its flags.
func entrypoint(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(src)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ENTRYPOINT "); ok {
			var entry []string
			if err := json.Unmarshal([]byte(rest), &entry); err != nil {
				t.Fatalf("ENTRYPOINT is not a JSON array: %v", err)
			}
			if len(entry) < 2 || entry[0] != "troupe" || entry[1] != "dev" {
				t.Fatalf("ENTRYPOINT %q: want troupe dev ...", entry)
			}
			return entry
		}
	}
	t.Fatal("the Containerfile has no ENTRYPOINT")
	return nil
}

// arg is one flag of a command line and its value ("" for a bool).
type arg struct{ name, value string }

// parseArgs splits a troupe dev command line (without "troupe dev") into
// flags, refusing flags troupe dev does not have, a flag without its value,
// a positional argument and a flag given twice.
func parseArgs(flags devFlags, args []string) ([]arg, error) {
	var out []arg
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			return nil, fmt.Errorf("%q: not a flag (troupe dev takes no positional argument)", args[i])
		}
		name, val, hasVal := strings.Cut(a, "=")
		takes, known := flags[name]
		if !known {
			return nil, fmt.Errorf("--%s: troupe dev has no such flag", name)
		}
		if takes && !hasVal {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return nil, fmt.Errorf("--%s: no value", name)
			}
			i++
			val = args[i]
		}
		if seen[name] {
			return nil, fmt.Errorf("--%s given twice", name)
		}
		seen[name] = true
		out = append(out, arg{name, val})
	}
	return out, nil
}

// flagValue is the value of one flag in args, and whether it is there.
func flagValue(args []arg, name string) (string, bool) {
	for _, a := range args {
		if a.name == name {
			return a.value, true
		}
	}
	return "", false
}

// splitHostPort splits HOST:PORT with a numeric port.
func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", hp)
	}
	return h, port, nil
}

// isUnspecified reports 0.0.0.0 and ::.
func isUnspecified(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// troupeEnvFlag maps TROUPE_NATS_HOST to nats-host.
func troupeEnvFlag(v string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(v, "TROUPE_")), "_", "-")
}
