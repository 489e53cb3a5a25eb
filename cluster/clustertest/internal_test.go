package clustertest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The dump printed when a test fails: the last lines of each node under a
// header with its id, in node order.
func TestFormatTails(t *testing.T) {
	lines := func(from, to int) string {
		var b strings.Builder
		for i := from; i <= to; i++ {
			fmt.Fprintf(&b, "line %d\n", i)
		}
		return b.String()
	}
	tests := []struct {
		name string
		logs []labelledLog
		n    int
		want string
	}{
		{
			name: "short logs are printed whole",
			logs: []labelledLog{{"n1", "a\nb\n"}, {"n2", "c"}},
			n:    60,
			want: "----- node n1: 2 lines -----\n  a\n  b\n----- node n2: 1 lines -----\n  c\n",
		},
		{
			name: "long logs keep their last lines",
			logs: []labelledLog{{"n1", lines(1, 100)}},
			n:    3,
			want: "----- node n1: last 3 of 100 lines -----\n  line 98\n  line 99\n  line 100\n",
		},
		{
			name: "a node that printed nothing says so",
			logs: []labelledLog{{"n3", ""}},
			n:    60,
			want: "----- node n3: no output -----\n",
		},
		{
			name: "no nodes",
			n:    60,
			want: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatTails(tc.logs, tc.n); got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestIsReadyLine(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{`{"time":"x","level":"INFO","msg":"node ready","http":"127.0.0.1:1"}`, true},
		{`time=x level=INFO msg="node ready" http=127.0.0.1:1`, true},
		{`{"time":"x","level":"INFO","msg":"nats ready"}`, false},
		{`{"msg":"starting","detail":"node ready"}`, false},
		{`{"msg":"node ready"`, false},
		{`panic: node ready`, false},
	}
	for _, tc := range tests {
		if got := isReadyLine(tc.line); got != tc.want {
			t.Errorf("isReadyLine(%s) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

// Output arrives in arbitrary chunks; the log holds whole lines and the
// ready callback fires once, on the ready line.
func TestLineWriter(t *testing.T) {
	log := newLogBuffer()
	log.beginRun("=== run 1")
	ready := 0
	w := &lineWriter{log: log, onReady: func() { ready++ }}
	out := "{\"msg\":\"a\"}\n{\"msg\":\"node ready\"}\n{\"msg\":\"node ready\"}\npartial"
	for i := 0; i < len(out); i += 7 {
		w.Write([]byte(out[i:min(i+7, len(out))]))
	}
	if found, _ := log.current("partial"); found {
		t.Fatal("a line without newline was logged before flush")
	}
	w.flush()
	want := "=== run 1\n{\"msg\":\"a\"}\n{\"msg\":\"node ready\"}\n{\"msg\":\"node ready\"}\npartial\n"
	if got := log.String(); got != want || ready != 1 {
		t.Fatalf("log %q, ready %d", got, ready)
	}
	// A new run: searches start at its separator.
	log.beginRun("=== run 2")
	if found, _ := log.current(`"a"`); found {
		t.Fatal("current() found a line of the previous run")
	}
}

func TestCreatorPID(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"trct-1234-1-hub", 1234, true},
		{"trct-99-probe", 99, true},
		{"trct-x-1-hub", 0, false},
		{"trct-0-1-hub", 0, false},
		{"trct-1234", 0, false},
		{"other-1234-1-hub", 0, false},
	}
	for _, tc := range tests {
		if pid, ok := creatorPID(tc.name); pid != tc.pid || ok != tc.ok {
			t.Errorf("creatorPID(%s) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
}

// Namespaces left by a process that died are removed; those of live
// processes stay.
func TestStaleNamespacesAreRemoved(t *testing.T) {
	if why := namespacesUnavailable(); why != "" {
		t.Skip("no network namespaces: " + why)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-1-hub", nsPrefix, dead.Process.Pid)
	live := fmt.Sprintf("%s%d-9999-hub", nsPrefix, os.Getpid())
	for _, ns := range []string{stale, live} {
		if err := ipCmd("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
				_ = ipCmd("netns", "del", ns)
			}
		})
	}
	if err := removeStaleNamespaces(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, stale)); !os.IsNotExist(err) {
		t.Errorf("stale namespace %s still there (%v)", stale, err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, live)); err != nil {
		t.Errorf("namespace %s of this live process was removed: %v", live, err)
	}
}

// After many calls into a namespace (dials, listens), every thread of the
// process is back in the process's own namespace.
func TestNoThreadLeftInANamespace(t *testing.T) {
	if why := namespacesUnavailable(); why != "" {
		t.Skip("no network namespaces: " + why)
	}
	tp, err := newTopology()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.close(); err != nil {
			t.Error(err)
		}
	})
	ns, err := tp.addNode(0, "n1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := listenIn(ns, "tcp", tp.nodeIP(0)+":7000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := dialIn(ctx, tp.client, "tcp", l.Addr().String())
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conn.Close()
	}
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread ended meanwhile
		}
		if got != own {
			t.Errorf("thread %s is in %s, the process in %s", task.Name(), got, own)
		}
	}
	// The test's own namespace has no address in the cluster's subnet (it is
	// never sent a packet to one: its default route leaves the machine).
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && tp.subnet.Contains(n.IP) {
			t.Errorf("the test's namespace has %s, inside the cluster's subnet %s", n, tp.subnet)
		}
	}
}

func TestLong(t *testing.T) {
	for _, tc := range []struct {
		val  string
		want bool
	}{{"", false}, {"0", false}, {"1", true}, {"yes", true}} {
		t.Setenv(LongEnv, tc.val)
		if got := Long(); got != tc.want {
			t.Errorf("%s=%q: Long() = %v, want %v", LongEnv, tc.val, got, tc.want)
		}
	}
}
