package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Sentinel errors.
var (
	// ErrRunning is returned by Start when the node already runs.
	ErrRunning = errors.New("clustertest: node already running")
	// ErrNotRunning is returned when a node that is not running is asked to
	// stop, or one never started is waited for.
	ErrNotRunning = errors.New("clustertest: node not running")
	// ErrTermTimeout is returned by Term when the node did not exit within
	// Options.TermTimeout after SIGTERM (it was killed then).
	ErrTermTimeout = errors.New("clustertest: node did not exit after SIGTERM")
	// ErrNoNamespaces is returned by the calls that need a node's network
	// namespace (DialFrom, ListenFrom) on a cluster made without them.
	ErrNoNamespaces = errors.New("clustertest: cluster has no network namespaces")
	// ErrAddressNotAllowed is returned when a client is asked to reach an
	// address outside loopback and the cluster's own network.
	ErrAddressNotAllowed = errors.New("clustertest: address outside the test network")
)

// StartError reports a node that exited or timed out before it was ready.
type StartError struct {
	Node string // node id
	Err  error  // why: the exit status, or the timeout
	Log  string // the last lines of its log
}

func (e *StartError) Error() string {
	return fmt.Sprintf("clustertest: node %s: %v; last log lines:\n%s", e.Node, e.Err, e.Log)
}

func (e *StartError) Unwrap() error { return e.Err }

// Options configure a Cluster. The zero value is three nodes on loopback
// with the cluster arguments (ClusterArgs).
type Options struct {
	// Nodes is how many nodes New allocates and Start starts. Default 3.
	Nodes int
	// Namespaces puts every node in a network namespace of its own (needed
	// for partitions). When namespaces are unavailable (not root, no `ip`,
	// creation fails) New skips the test with a message naming why.
	Namespaces bool
	// Args returns a node's command line (without the binary), evaluated
	// at every start. Default ClusterArgs; SingleNodeArgs runs plain
	// single nodes.
	Args func(n *Node) []string
	// ExtraArgs, when set, returns arguments appended to Args.
	ExtraArgs func(n *Node) []string
	// Env is extra environment (KEY=value) for every node and for CLI.
	Env []string
	// ReadyTimeout bounds a node's start (Start) and the waits that have no
	// deadline of their own (WaitLog, Wait, CLI). Default 60 s: a node
	// normally starts in well under a second, but a cold first run on a
	// busy two-core machine can take many.
	ReadyTimeout time.Duration
	// TermTimeout bounds the exit after SIGTERM (Term). Default 30 s.
	TermTimeout time.Duration
	// Binary is the troupe binary to run. Default: Binary(t).
	Binary string
}

const (
	defaultNodes        = 3
	defaultReadyTimeout = 60 * time.Second
	defaultTermTimeout  = 30 * time.Second
)

func (o *Options) setDefaults() {
	if o.Nodes == 0 {
		o.Nodes = defaultNodes
	}
	if o.Args == nil {
		o.Args = ClusterArgs
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = defaultReadyTimeout
	}
	if o.TermTimeout == 0 {
		o.TermTimeout = defaultTermTimeout
	}
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.Nodes < 0 {
		errs = append(errs, fmt.Errorf("Nodes %d: must not be negative", o.Nodes))
	}
	if o.ReadyTimeout < 0 {
		errs = append(errs, fmt.Errorf("ReadyTimeout %s: must not be negative", o.ReadyTimeout))
	}
	if o.TermTimeout < 0 {
		errs = append(errs, fmt.Errorf("TermTimeout %s: must not be negative", o.TermTimeout))
	}
	for _, kv := range o.Env {
		if !strings.Contains(kv, "=") {
			errs = append(errs, fmt.Errorf("Env %q: want KEY=value", kv))
		}
	}
	return errors.Join(errs...)
}

// ClusterArgs is the default command line of a cluster node:
//
//	dev --node-id ID --data-dir DIR --http IP:PORT --nats-host IP --nats-port PORT
//	    --gossip IP:PORT --cluster-port PORT --shards 8 [--join SEED,...] --log-format json
//
// where the seeds are the gossip addresses of every other node of the
// cluster (none for a one-node cluster).
func ClusterArgs(n *Node) []string {
	args := []string{"dev",
		"--node-id", n.ID,
		"--data-dir", n.DataDir,
		"--http", n.HTTPAddr(),
		"--nats-host", n.IP,
		"--nats-port", strconv.Itoa(n.NATSPort),
		"--gossip", n.GossipAddr(),
		"--cluster-port", strconv.Itoa(n.RoutePort),
		// Few shards: a cluster of three processes on a 2-core machine
		// starts in seconds (the default 96 streams take longer).
		"--shards", "8",
	}
	if seeds := n.c.seeds(n); len(seeds) > 0 {
		args = append(args, "--join", strings.Join(seeds, ","))
	}
	return append(args, "--log-format", "json")
}

// SingleNodeArgs is the command line of an independent single node on the
// node's directory and addresses:
//
//	dev --data-dir DIR --http IP:PORT --nats-host IP --nats-port PORT --log-format json
func SingleNodeArgs(n *Node) []string {
	return []string{"dev",
		"--data-dir", n.DataDir,
		"--http", n.HTTPAddr(),
		"--nats-host", n.IP,
		"--nats-port", strconv.Itoa(n.NATSPort),
		"--log-format", "json",
	}
}

// Cluster is a set of troupe processes of one test, and the network they
// run in. Create it with New or Start; the test's cleanup stops it. Methods
// that take no *testing.T fail the cluster's test (t.Fatal) and must then be
// called from the test's goroutine; the others are safe for concurrent use.
type Cluster struct {
	t    *testing.T
	opts Options
	bin  string
	base string    // the nodes' data directories are base/<id>
	tp   *topology // nil without namespaces

	procs sync.WaitGroup // the owner goroutines of runs

	mu     sync.Mutex
	nodes  []*Node
	cuts   map[cut]bool
	eph    map[string]int // namespace -> lowest ephemeral port
	client *http.Client
}

// New allocates a cluster of opts.Nodes nodes (ids n1..nN, directories
// under t.TempDir(), addresses and ports), creates the namespaces if asked,
// and registers the cleanup. It starts nothing.
func New(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	if opts.Namespaces {
		if why := namespacesUnavailable(); why != "" {
			t.Skip("clustertest: skipped, no network namespaces: " + why)
		}
	}
	bin := opts.Binary
	if bin == "" {
		bin = Binary(t)
	}
	c := &Cluster{t: t, opts: opts, bin: bin, base: t.TempDir(), cuts: map[cut]bool{}, eph: map[string]int{}}
	// Registered after TempDir's own cleanup, so it runs before it:
	// processes are gone when their directories are removed.
	t.Cleanup(c.cleanup)
	if opts.Namespaces {
		sweepStale()
		tp, err := newTopology()
		c.tp = tp
		if err != nil {
			t.Fatalf("clustertest: create the network: %v", err)
		}
	}
	for range opts.Nodes {
		if _, err := c.addNode(); err != nil {
			t.Fatalf("clustertest: %v", err)
		}
	}
	return c
}

// Start is New, then starts every node concurrently and waits until each is
// ready; any failure fails the test (the cleanup prints the logs).
func Start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	c := New(t, opts)
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	return c
}

// StartAll starts every node that is not running, concurrently, and waits
// until each is ready.
func (c *Cluster) StartAll() error {
	nodes := c.Nodes()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if n.Running() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Start()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Node returns node i (0-based).
func (c *Cluster) Node(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		c.t.Fatalf("clustertest: no node %d (cluster of %d)", i, len(c.nodes))
	}
	return c.nodes[i]
}

// Nodes returns every node, in index order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// AddNode allocates one more node (with its namespace when the cluster has
// them); it is not started.
func (c *Cluster) AddNode() *Node {
	n, err := c.addNode()
	if err != nil {
		c.t.Fatalf("clustertest: %v", err)
	}
	return n
}

func (c *Cluster) addNode() (*Node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.nodes)
	n := &Node{Index: i, ID: "n" + strconv.Itoa(i+1), c: c, log: newLogBuffer()}
	n.DataDir = filepath.Join(c.base, n.ID)
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return nil, err
	}
	if c.tp != nil {
		ns, err := c.tp.addNode(i, n.ID)
		if err != nil {
			return nil, fmt.Errorf("namespace of %s: %w", n.ID, err)
		}
		n.Netns, n.IP = ns, c.tp.nodeIP(i)
		n.HTTPPort, n.NATSPort, n.GossipPort, n.RoutePort = nsHTTPPort, nsNATSPort, nsGossipPort, nsRoutePort
	} else {
		n.IP = "127.0.0.1"
		ports, err := freePorts(4)
		if err != nil {
			return nil, err
		}
		n.HTTPPort, n.NATSPort, n.GossipPort, n.RoutePort = ports[0], ports[1], ports[2], ports[3]
	}
	c.nodes = append(c.nodes, n)
	return n, nil
}

// Namespaces reports whether the nodes run in namespaces of their own.
func (c *Cluster) Namespaces() bool { return c.tp != nil }

// NetnsPrefix is the prefix of the names of every namespace this cluster
// created ("" without namespaces).
func (c *Cluster) NetnsPrefix() string {
	if c.tp == nil {
		return ""
	}
	return c.tp.prefix
}

// ClientIP is the address clients (HTTPClient, Dial, CLI) come from:
// 127.0.0.1 without namespaces.
func (c *Cluster) ClientIP() string {
	if c.tp == nil {
		return "127.0.0.1"
	}
	return c.tp.clientIP()
}

func (c *Cluster) args(n *Node) []string {
	if n.Args != nil {
		return n.Args(n)
	}
	args := c.opts.Args(n)
	if c.opts.ExtraArgs != nil {
		args = append(append([]string(nil), args...), c.opts.ExtraArgs(n)...)
	}
	return args
}

// seeds are the gossip addresses of every node but n.
func (c *Cluster) seeds(n *Node) []string {
	var out []string
	for _, o := range c.Nodes() {
		if o != n {
			out = append(out, o.GossipAddr())
		}
	}
	return out
}

// bound gives ctx the ReadyTimeout deadline when it has none.
func (c *Cluster) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.ReadyTimeout)
}

// LogTails renders the last lines of every node's log, labelled by node id.
func (c *Cluster) LogTails(lines int) string {
	var logs []labelledLog
	for _, n := range c.Nodes() {
		logs = append(logs, labelledLog{Label: n.ID, Log: n.Log()})
	}
	return formatTails(logs, lines)
}

// cleanup kills every process, prints the logs when the test failed, and
// deletes the namespaces.
func (c *Cluster) cleanup() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Kill()
		}()
	}
	wg.Wait()
	owners := make(chan struct{})
	go func() {
		c.procs.Wait()
		close(owners)
	}()
	select {
	case <-owners:
	case <-time.After(killWait):
		c.t.Errorf("clustertest: output of a killed node still open after %s", killWait)
	}
	c.mu.Lock()
	if c.client != nil {
		c.client.CloseIdleConnections()
	}
	c.mu.Unlock()
	if c.t.Failed() {
		c.t.Logf("clustertest: the last %d log lines of each node:\n%s", DumpLines, c.LogTails(DumpLines))
	}
	if c.tp != nil {
		if err := c.tp.close(); err != nil {
			c.t.Errorf("clustertest: delete namespaces: %v", err)
		}
	}
}

// HTTPClient returns a client that reaches the nodes from the client
// namespace (loopback without namespaces). It only dials loopback and the
// cluster's addresses, and ignores proxy settings.
func (c *Cluster) HTTPClient() *http.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		c.client = &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         c.Dial,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     30 * time.Second,
			},
			Timeout: c.opts.ReadyTimeout,
		}
	}
	return c.client
}

// Dial connects to addr (an IP literal and port) from the client namespace
// (loopback without namespaces).
func (c *Cluster) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := c.allowed(addr); err != nil {
		return nil, err
	}
	if c.tp == nil {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return dialIn(ctx, c.tp.client, network, addr)
}

// DialFrom connects to addr with a socket created inside node's namespace,
// so that the connection is subject to the node's cuts. Namespaces only.
func (c *Cluster) DialFrom(ctx context.Context, node int, network, addr string) (net.Conn, error) {
	n, err := c.nodeNS(node)
	if err != nil {
		return nil, err
	}
	if err := c.allowed(addr); err != nil {
		return nil, err
	}
	return dialIn(ctx, n.Netns, network, addr)
}

// ListenFrom listens on addr inside node's namespace, for tests that need a
// server of their own there (use the node's IP and a port below 32768 so
// that one-way cuts cover it). Namespaces only.
func (c *Cluster) ListenFrom(node int, network, addr string) (net.Listener, error) {
	n, err := c.nodeNS(node)
	if err != nil {
		return nil, err
	}
	return listenIn(n.Netns, network, addr)
}

// ListenPacketFrom opens a packet (UDP) socket on addr inside node's
// namespace. Namespaces only.
func (c *Cluster) ListenPacketFrom(node int, network, addr string) (net.PacketConn, error) {
	n, err := c.nodeNS(node)
	if err != nil {
		return nil, err
	}
	return listenPacketIn(n.Netns, network, addr)
}

func (c *Cluster) nodeNS(i int) (*Node, error) {
	if c.tp == nil {
		return nil, ErrNoNamespaces
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("clustertest: no node %d (cluster of %d)", i, len(c.nodes))
	}
	return c.nodes[i], nil
}

// allowed accepts loopback and, with namespaces, the cluster's subnet,
// which exists only in the cluster's namespaces. Host names are refused: a
// test names the address it means.
func (c *Cluster) allowed(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %q: %v", ErrAddressNotAllowed, addr, err)
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return fmt.Errorf("%w: %q is not an IP address", ErrAddressNotAllowed, addr)
	case ip.IsLoopback():
		return nil
	case c.tp != nil && c.tp.subnet.Contains(ip):
		return nil
	}
	return fmt.Errorf("%w: %s", ErrAddressNotAllowed, addr)
}

// CLI runs the troupe binary with args (for example "cluster", "members",
// "--api", n.HTTPURL()) in the client namespace, with Options.Env. err is
// an *exec.ExitError when it exits non-zero. Without a deadline on ctx,
// ReadyTimeout bounds it.
func (c *Cluster) CLI(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	var cmd *exec.Cmd
	if c.tp != nil {
		cmd = exec.CommandContext(ctx, ipPath, append([]string{"netns", "exec", c.tp.client, c.bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, c.bin, args...)
	}
	cmd.Env = append(os.Environ(), c.opts.Env...)
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{} // handed out by this process
)

// freePorts picks n ports that are free for TCP and UDP on 127.0.0.1, below
// the ephemeral range so that no port-0 listener of another process takes
// them between now and the node's start, and never handed out twice by one
// process.
func freePorts(n int) ([]int, error) {
	low, high := portWindow()
	portMu.Lock()
	defer portMu.Unlock()
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("clustertest: no free port in [%d, %d) after %d tries", low, high, tries)
		}
		p := low + rand.IntN(high-low)
		if portsUsed[p] || !bindable(p) {
			continue
		}
		portsUsed[p] = true
		out = append(out, p)
	}
	return out, nil
}

// portWindow is where freePorts picks: [20000, ephemeral low) by default.
func portWindow() (int, int) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 2048 {
				low = v
			}
		}
	}
	start := 20000
	if start >= low-1000 {
		start = low / 2
	}
	return start, low
}

func bindable(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}
