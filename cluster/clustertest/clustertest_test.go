package clustertest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/clustertest"
)

func TestMain(m *testing.M) {
	code := clustertest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// connect posts a Connect JSON request and decodes the answer.
func connect(t *testing.T, c *clustertest.Cluster, n *clustertest.Node, method, body string) map[string]any {
	t.Helper()
	resp, err := c.HTTPClient().Post(n.HTTPURL()+"/troupe.v1."+method, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s on %s: %v", method, n.ID, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil {
		t.Fatalf("%s on %s: %d %s", method, n.ID, resp.StatusCode, b)
	}
	return out
}

func healthz(c *clustertest.Cluster, n *clustertest.Node) error {
	resp, err := c.HTTPClient().Get(n.HTTPURL() + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("healthz of %s: %d %s", n.ID, resp.StatusCode, b)
	}
	return nil
}

// Two single nodes, on loopback and in namespaces: the API through the
// harness's client, kill -9 and restart on the same directory and ports
// with the data intact, the CLI, SIGTERM with exit code 0.
func TestSingleNodes(t *testing.T) {
	tests := []struct {
		name       string
		namespaces bool
	}{
		{"loopback", false},
		{"namespaces", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := clustertest.Start(t, clustertest.Options{Nodes: 2, Namespaces: tc.namespaces, Args: clustertest.SingleNodeArgs})
			for _, n := range c.Nodes() {
				if err := healthz(c, n); err != nil {
					t.Fatal(err)
				}
				if !n.Running() || n.PID() == 0 {
					t.Fatalf("%s: running %v, pid %d", n.ID, n.Running(), n.PID())
				}
			}
			n0, n1 := c.Node(0), c.Node(1)
			if tc.namespaces && (n0.IP == "127.0.0.1" || n0.IP == n1.IP || n0.Netns == "") {
				t.Fatalf("namespaces: node addresses %s and %s, netns %q", n0.IP, n1.IP, n0.Netns)
			}

			sent := connect(t, c, n0, "CommandService/Send", `{"kind":"account","id":"a1","type":"Open","payload":{"owner":"x"}}`)
			pid, port, dir := n0.PID(), n0.HTTPPort, n0.DataDir
			n0.Kill()
			if n0.Running() || n0.PID() != 0 {
				t.Fatalf("after Kill: running %v, pid %d", n0.Running(), n0.PID())
			}
			if err := healthz(c, n0); err == nil {
				t.Fatal("healthz answered after Kill")
			}
			if err := n0.Restart(); err != nil {
				t.Fatal(err)
			}
			if n0.PID() == pid || n0.HTTPPort != port || n0.DataDir != dir {
				t.Fatalf("restart: pid %d -> %d, port %d -> %d, dir %s -> %s", pid, n0.PID(), port, n0.HTTPPort, dir, n0.DataDir)
			}
			q := connect(t, c, n0, "QueryService/Query", fmt.Sprintf(`{"name":"account","params":{"id":"a1"},"minPosition":%q}`, sent["position"]))
			if r, _ := q["result"].(map[string]any); r["owner"] != "x" || r["open"] != true {
				t.Fatalf("account a1 after kill -9 and restart: %v", q)
			}
			// The other node is independent and untouched.
			if err := healthz(c, n1); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stdout, stderr, err := c.CLI(ctx, "query", "account", `{"id":"a1"}`, "--node", n0.HTTPURL())
			if err != nil || !strings.Contains(stdout, `"owner":"x"`) {
				t.Fatalf("troupe query through CLI: %v; stdout %q; stderr %q", err, stdout, stderr)
			}

			if tc.namespaces {
				checkDialFromNodes(t, c)
			}

			code, took, err := n0.Term()
			if err != nil || code != 0 {
				t.Fatalf("Term: code %d, took %s, err %v\n%s", code, took, err, n0.Log())
			}
			t.Logf("%s: SIGTERM to exit took %s", n0.ID, took)
			if took <= 0 || n0.Running() {
				t.Fatalf("Term: took %s, still running %v", took, n0.Running())
			}
			if got, err := n0.Wait(ctx); err != nil || got != 0 {
				t.Fatalf("Wait after Term: %d %v", got, err)
			}
			log := n0.Log()
			for _, sep := range []string{"===== clustertest: n1 run 1, pid ", "===== clustertest: n1 run 2, pid ", "n1 run 1 (pid " + fmt.Sprint(pid) + ") ended: signal: killed"} {
				if strings.Count(log, sep) != 1 {
					t.Fatalf("want one %q in the log:\n%s", sep, log)
				}
			}
			if !strings.Contains(log, `"msg":"node stopped"`) {
				t.Fatalf("no clean stop in the log:\n%s", log)
			}
			if _, _, err := n0.Term(); !errors.Is(err, clustertest.ErrNotRunning) {
				t.Fatalf("Term of a stopped node: %v, want ErrNotRunning", err)
			}
		})
	}
}

// checkDialFromNodes: sockets from node 0's namespace reach node 1's API
// until Cut(0, 1); node 1 still reaches node 0's (one-way); Heal restores.
func checkDialFromNodes(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	n0, n1 := c.Node(0), c.Node(1)
	if err := dialOnce(c, 0, n1.HTTPAddr(), 5*time.Second); err != nil {
		t.Fatalf("DialFrom(0, %s) before any cut: %v", n1.HTTPAddr(), err)
	}
	c.Cut(0, 1)
	if err := dialOnce(c, 0, n1.HTTPAddr(), 500*time.Millisecond); !isTimeout(err) {
		t.Fatalf("DialFrom(0, %s) after Cut(0, 1): %v, want a timeout", n1.HTTPAddr(), err)
	}
	if err := dialOnce(c, 1, n0.HTTPAddr(), 5*time.Second); err != nil {
		t.Fatalf("DialFrom(1, %s) after Cut(0, 1): %v, want success (one-way)", n0.HTTPAddr(), err)
	}
	// The client namespace is not cut.
	if err := healthz(c, n1); err != nil {
		t.Fatalf("client after Cut(0, 1): %v", err)
	}
	c.Heal()
	if err := dialOnce(c, 0, n1.HTTPAddr(), 5*time.Second); err != nil {
		t.Fatalf("DialFrom(0, %s) after Heal: %v", n1.HTTPAddr(), err)
	}
}

func dialOnce(c *clustertest.Cluster, from int, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := c.DialFrom(ctx, from, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// echoServers runs a TCP echo server (port 7000) and a UDP socket (port
// 7001) in every node's namespace, owned by the test.
type echoServers struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	ls    []net.Listener
	conns []net.Conn
	udp   []net.PacketConn
}

func startEcho(t *testing.T, c *clustertest.Cluster) *echoServers {
	t.Helper()
	e := &echoServers{}
	t.Cleanup(e.close)
	for _, n := range c.Nodes() {
		l, err := c.ListenFrom(n.Index, "tcp", net.JoinHostPort(n.IP, "7000"))
		if err != nil {
			t.Fatal(err)
		}
		pc, err := c.ListenPacketFrom(n.Index, "udp", net.JoinHostPort(n.IP, "7001"))
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		e.ls, e.udp = append(e.ls, l), append(e.udp, pc)
		e.wg.Add(1)
		go e.serve(l)
	}
	return e
}

func (e *echoServers) serve(l net.Listener) {
	defer e.wg.Done()
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		e.mu.Lock()
		e.conns = append(e.conns, conn)
		e.mu.Unlock()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			_, _ = io.Copy(conn, conn)
		}()
	}
}

func (e *echoServers) close() {
	for _, l := range e.ls {
		l.Close()
	}
	for _, pc := range e.udp {
		pc.Close()
	}
	e.mu.Lock()
	for _, c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// echo sends a line on conn and waits (bounded) for it to come back.
func echo(conn net.Conn, timeout time.Duration) error {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	_, err := io.ReadFull(conn, buf)
	return err
}

// client is the client namespace in reachability matrices.
const client = -1

type link struct{ from, to int }

// reach checks, concurrently, every link of want: true links must carry an
// echo within 5 s (retrying), false ones must time out (silent drop) on a
// 700 ms attempt.
func reach(t *testing.T, c *clustertest.Cluster, want map[link]bool) {
	t.Helper()
	got := make(map[link]error, len(want))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for l, open := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := tryLink(c, l, open)
			mu.Lock()
			got[l] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	for l, open := range want {
		err := got[l]
		switch {
		case open && err != nil:
			t.Errorf("%d -> %d should be open: %v (cuts %v)", l.from, l.to, err, c.Cuts())
		case !open && err == nil:
			t.Errorf("%d -> %d should be cut, but the echo came back (cuts %v)", l.from, l.to, c.Cuts())
		case !open && !isTimeout(err):
			t.Errorf("%d -> %d: %v, want a silent drop (timeout)", l.from, l.to, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func tryLink(c *clustertest.Cluster, l link, open bool) error {
	attempt := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		addr := net.JoinHostPort(c.Node(l.to).IP, "7000")
		var conn net.Conn
		var err error
		if l.from == client {
			conn, err = c.Dial(ctx, "tcp", addr)
		} else {
			conn, err = c.DialFrom(ctx, l.from, "tcp", addr)
		}
		if err != nil {
			return err
		}
		defer conn.Close()
		return echo(conn, timeout)
	}
	if !open {
		return attempt(700 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := attempt(time.Second)
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// matrix is every link between nodes and from the client, open unless
// listed in cut.
func matrix(nodes int, cut ...link) map[link]bool {
	m := map[link]bool{}
	for a := client; a < nodes; a++ {
		for b := 0; b < nodes; b++ {
			if a != b {
				m[link{a, b}] = true
			}
		}
	}
	for _, l := range cut {
		m[l] = false
	}
	return m
}

// Cuts, one-way and both ways, isolation, partitions and healing, checked
// on servers of the test's own in each node's namespace.
func TestPartitions(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Namespaces: true})
	e := startEcho(t, c)
	reach(t, c, matrix(3))

	// Connections open before a cut.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c01, err := c.DialFrom(ctx, 0, "tcp", net.JoinHostPort(c.Node(1).IP, "7000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c01.Close()
	c10, err := c.DialFrom(ctx, 1, "tcp", net.JoinHostPort(c.Node(0).IP, "7000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c10.Close()
	for _, conn := range []net.Conn{c01, c10} {
		if err := echo(conn, 5*time.Second); err != nil {
			t.Fatalf("existing connection before the cut: %v", err)
		}
	}

	t.Run("one-way cut", func(t *testing.T) {
		c.Cut(0, 1)
		// 0 cannot reach 1's server; 1 still reaches 0's.
		reach(t, c, matrix(3, link{0, 1}))
		if err := echo(c01, 700*time.Millisecond); !isTimeout(err) {
			t.Fatalf("existing 0 -> 1 connection after Cut(0, 1): %v, want a timeout", err)
		}
		if err := echo(c10, 5*time.Second); err != nil {
			t.Fatalf("existing 1 -> 0 connection after Cut(0, 1): %v", err)
		}
		// UDP, as gossip uses it (same port both ways): 0's datagrams to 1
		// are lost, 1's reach 0.
		udp0, udp1 := e.udp[0], e.udp[1]
		if err := datagram(udp0, udp1, c.Node(1).IP); err == nil {
			t.Fatal("UDP 0 -> 1 arrived after Cut(0, 1)")
		}
		if err := datagram(udp1, udp0, c.Node(0).IP); err != nil {
			t.Fatalf("UDP 1 -> 0 after Cut(0, 1): %v", err)
		}
		c.Heal()
		// The stalled connection delivers again (TCP retransmits).
		if err := c01.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c01, buf); err != nil {
			t.Fatalf("existing 0 -> 1 connection after Heal: %v", err)
		}
		reach(t, c, matrix(3))
	})

	t.Run("cut both ways", func(t *testing.T) {
		c.CutBoth(0, 1)
		reach(t, c, matrix(3, link{0, 1}, link{1, 0}))
		c.Heal()
		reach(t, c, matrix(3))
	})

	t.Run("partition", func(t *testing.T) {
		c.Partition([]int{0}, []int{1, 2})
		reach(t, c, matrix(3, link{0, 1}, link{1, 0}, link{0, 2}, link{2, 0}))
		// A new partition replaces the old one; node 2, in no group, is alone.
		c.Partition([]int{0, 1})
		reach(t, c, matrix(3, link{0, 2}, link{2, 0}, link{1, 2}, link{2, 1}))
		c.Heal()
		reach(t, c, matrix(3))
	})

	t.Run("isolate", func(t *testing.T) {
		c.Isolate(2)
		reach(t, c, matrix(3, link{0, 2}, link{2, 0}, link{1, 2}, link{2, 1}))
		c.IsolateFromClient(0)
		reach(t, c, matrix(3, link{0, 2}, link{2, 0}, link{1, 2}, link{2, 1}, link{client, 0}))
		c.Heal()
		if cuts := c.Cuts(); len(cuts) != 0 {
			t.Fatalf("cuts after Heal: %v", cuts)
		}
		reach(t, c, matrix(3))
	})
}

// datagram sends one datagram from one socket to the other's port 7001 at
// ip and waits up to 700 ms for it to arrive.
func datagram(from, to net.PacketConn, ip string) error {
	msg := []byte(fmt.Sprintf("dgram-%d", time.Now().UnixNano()))
	if _, err := from.WriteTo(msg, &net.UDPAddr{IP: net.ParseIP(ip), Port: 7001}); err != nil {
		return err
	}
	if err := to.SetReadDeadline(time.Now().Add(700 * time.Millisecond)); err != nil {
		return err
	}
	buf := make([]byte, 64)
	for {
		k, _, err := to.ReadFrom(buf)
		if err != nil {
			return err
		}
		if bytes.Equal(buf[:k], msg) {
			return nil
		}
	}
}

// The clients refuse addresses outside loopback and the cluster's network,
// and the namespace-only calls say so without namespaces.
func TestClientsStayInside(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 1, Args: clustertest.SingleNodeArgs})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range []string{"192.0.2.1:80", "10.1.2.3:80", "example.com:80", "no-port"} {
		if _, err := c.Dial(ctx, "tcp", addr); !errors.Is(err, clustertest.ErrAddressNotAllowed) {
			t.Errorf("Dial(%s): %v, want ErrAddressNotAllowed", addr, err)
		}
	}
	if _, err := c.HTTPClient().Get("http://192.0.2.1/"); !errors.Is(err, clustertest.ErrAddressNotAllowed) {
		t.Errorf("HTTPClient to 192.0.2.1: %v, want ErrAddressNotAllowed", err)
	}
	if _, err := c.DialFrom(ctx, 0, "tcp", "127.0.0.1:1"); !errors.Is(err, clustertest.ErrNoNamespaces) {
		t.Errorf("DialFrom without namespaces: %v, want ErrNoNamespaces", err)
	}
}

// A node that exits before it is ready, and one that never gets ready,
// report why with their log; StartNoWait, WaitLog and Wait observe a node
// that must be refused.
func TestStartFailures(t *testing.T) {
	t.Run("exits", func(t *testing.T) {
		c := clustertest.New(t, clustertest.Options{Nodes: 1, Args: func(*clustertest.Node) []string {
			return []string{"dev", "--no-such-flag"}
		}})
		n := c.Node(0)
		err := n.Start()
		var se *clustertest.StartError
		if !errors.As(err, &se) || se.Node != "n1" || !strings.Contains(se.Log, "unknown flag: --no-such-flag") {
			t.Fatalf("Start: %v", err)
		}
		if err := n.StartNoWait(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.WaitLog(ctx, "unknown flag"); err != nil {
			t.Fatal(err)
		}
		if code, err := n.Wait(ctx); err != nil || code == 0 {
			t.Fatalf("Wait: code %d, err %v", code, err)
		}
		if err := n.WaitLog(ctx, "node ready"); err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("WaitLog for a line the run never printed: %v", err)
		}
	})
	t.Run("never ready", func(t *testing.T) {
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			t.Fatal(err)
		}
		c := clustertest.New(t, clustertest.Options{Nodes: 1, Binary: sleep, ReadyTimeout: 300 * time.Millisecond,
			Args: func(*clustertest.Node) []string { return []string{"60"} }})
		n := c.Node(0)
		start := time.Now()
		err = n.Start()
		var se *clustertest.StartError
		if !errors.As(err, &se) || !strings.Contains(se.Err.Error(), "not ready after 300ms") {
			t.Fatalf("Start: %v", err)
		}
		if took := time.Since(start); took > 30*time.Second || n.Running() {
			t.Fatalf("Start returned after %s, still running %v", took, n.Running())
		}
	})
}

// After a test, its cluster leaves no process and no namespace behind.
func TestCleanupLeavesNothing(t *testing.T) {
	tests := []struct {
		name       string
		namespaces bool
	}{
		{"loopback", false},
		{"namespaces", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var prefix string
			var pids []int
			ran := t.Run("cluster", func(t *testing.T) {
				c := clustertest.Start(t, clustertest.Options{Nodes: 2, Namespaces: tc.namespaces, Args: clustertest.SingleNodeArgs})
				prefix = c.NetnsPrefix()
				for _, n := range c.Nodes() {
					pids = append(pids, n.PID())
				}
				if tc.namespaces {
					c.Cut(0, 1)
					if left := netns(t, prefix); len(left) != 4 {
						t.Fatalf("namespaces of a 2-node cluster: %v, want hub, client and 2 nodes", left)
					}
				}
			})
			if !ran {
				t.Fatal("cluster subtest failed")
			}
			if tc.namespaces && prefix == "" {
				t.Skip("namespaces unavailable (the subtest said why)")
			}
			for _, pid := range pids {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("process %d still exists after the test: kill(0) = %v", pid, err)
				}
			}
			if tc.namespaces {
				if left := netns(t, prefix); len(left) != 0 {
					t.Errorf("namespaces left after the test: %v", left)
				}
			}
		})
	}
}

func netns(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// The default arguments are the cluster template, with every other node as
// a seed.
func TestClusterArgs(t *testing.T) {
	c := clustertest.New(t, clustertest.Options{Nodes: 3, Binary: "/bin/true"})
	n := c.Node(1)
	got := strings.Join(clustertest.ClusterArgs(n), " ")
	want := fmt.Sprintf("dev --node-id n2 --data-dir %s --http 127.0.0.1:%d --nats-host 127.0.0.1 --nats-port %d --gossip 127.0.0.1:%d --cluster-port %d --shards 8 --join %s,%s --log-format json",
		n.DataDir, n.HTTPPort, n.NATSPort, n.GossipPort, n.RoutePort, c.Node(0).GossipAddr(), c.Node(2).GossipAddr())
	if got != want {
		t.Fatalf("ClusterArgs:\n got %s\nwant %s", got, want)
	}
	one := clustertest.New(t, clustertest.Options{Nodes: 1, Binary: "/bin/true"})
	if args := strings.Join(clustertest.ClusterArgs(one.Node(0)), " "); strings.Contains(args, "--join") {
		t.Fatalf("a one-node cluster has seeds: %s", args)
	}
	added := c.AddNode()
	if added.ID != "n4" || len(c.Nodes()) != 4 || !strings.Contains(strings.Join(clustertest.ClusterArgs(n), " "), added.GossipAddr()) {
		t.Fatalf("AddNode: %s, %d nodes", added.ID, len(c.Nodes()))
	}
	ports := map[int]string{}
	for _, n := range c.Nodes() {
		for _, p := range []int{n.HTTPPort, n.NATSPort, n.GossipPort, n.RoutePort} {
			if prev, dup := ports[p]; dup {
				t.Fatalf("port %d given to %s and %s", p, prev, n.ID)
			}
			ports[p] = n.ID
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts clustertest.Options
		want string
	}{
		{"zero value", clustertest.Options{}, ""},
		{"negative nodes", clustertest.Options{Nodes: -1}, "Nodes -1"},
		{"negative timeout", clustertest.Options{ReadyTimeout: -time.Second}, "ReadyTimeout -1s"},
		{"bad env", clustertest.Options{Env: []string{"NOEQUALS"}}, `Env "NOEQUALS"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	clustertest.Eventually(t, 5*time.Second, "third call", func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("%d calls", calls)
	}

	ft := &fakeTB{TB: t}
	start := time.Now()
	clustertest.Eventually(ft, 200*time.Millisecond, "never", func() error { return errors.New("nope") })
	took := time.Since(start)
	if !strings.Contains(ft.fatal, "never: still not true after 200ms") || !strings.Contains(ft.fatal, "last error: nope") {
		t.Fatalf("failure message %q", ft.fatal)
	}
	if took < 200*time.Millisecond || took > 5*time.Second {
		t.Fatalf("Eventually gave up after %s", took)
	}
}

// fakeTB records Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }
