// Package bustest starts clusters of embedded NATS servers (cluster/bus) in
// the test's process: N servers on 127.0.0.1 with free ports, routed to
// each other, JetStream clustered, each with its store in the test's temp
// dir. Servers can be stopped abruptly (as a crash of their node looks to
// the others), shut down gracefully, and restarted on the same store and
// ports. Tests of anything built on JetStream (the replicated journal,
// leases) use it; tests of whole nodes use cluster/clustertest.
//
//	c := bustest.Start(t, 3)
//	js := c.JetStream(t, 0)             // a client on server 0
//	c.Kill(1)                           // server 1 gone without a goodbye
//	c.Restart(1)                        // back, same store and ports
package bustest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus"
)

// Cluster is a set of clustered embedded servers of one test. Its methods
// fail the test on errors and must be called from the test's goroutine.
type Cluster struct {
	t       testing.TB
	name    string   // the NATS cluster's name, unique to this Cluster
	routes  []string // host:port of every server's route listener
	clients []int    // every server's client port
	dirs    []string // every server's JetStream store
	log     *slog.Logger

	mu    sync.Mutex
	buses []*bus.Bus // nil while a server is down
}

// Options configure Start. The zero value is quiet servers.
type Options struct {
	// Logger receives the servers' logs. Default: discarded.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for JetStream. Default 30 s (a first
	// election can take 5-9 s).
	ReadyTimeout time.Duration
}

// Start starts n clustered servers (n = 1: one server, not clustered) and
// waits until JetStream answers on every one of them. The test's cleanup
// stops them.
func Start(t testing.TB, n int) *Cluster { return StartWith(t, n, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	// A name of its own: a server of another test (another package runs
	// beside this one) that happens to take a port this cluster's routes
	// dial is refused, not merged into it.
	c := &Cluster{t: t, name: fmt.Sprintf("bustest-%d-%d", os.Getpid(), clusters.Add(1)), log: opts.Logger, buses: make([]*bus.Bus, n)}
	for i := range n {
		c.routes = append(c.routes, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		c.clients = append(c.clients, freePort(t))
		c.dirs = append(c.dirs, filepath.Join(t.TempDir(), fmt.Sprintf("s%d", i+1)))
	}
	t.Cleanup(c.close)
	for i := range n {
		c.startFirst(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.ReadyTimeout)
	defer cancel()
	for i := range n {
		if err := c.Bus(i).WaitJetStream(ctx); err != nil {
			t.Fatalf("bustest: server %d: %v", i, err)
		}
	}
	return c
}

// Name is server i's name (its would-be node id): s1, s2, ...
func (c *Cluster) Name(i int) string { return fmt.Sprintf("s%d", i+1) }

// Size is the number of servers, running or not.
func (c *Cluster) Size() int { return len(c.routes) }

// clusters numbers the Clusters of this process.
var clusters atomic.Int64

// startFirst starts server i for the first time. Its ports were free
// when chosen, but another process may have taken one since (the server
// then never becomes ready): it tries again on new ports, twice. The
// others' routes reach it all the same (it dials them, and routes are
// gossiped).
func (c *Cluster) startFirst(i int) {
	c.t.Helper()
	for try := 0; ; try++ {
		err := c.tryStart(i)
		if err == nil {
			return
		}
		if try == 2 {
			c.t.Fatalf("bustest: start server %d: %v", i, err)
		}
		c.t.Logf("bustest: start server %d: %v; trying new ports", i, err)
		c.routes[i] = fmt.Sprintf("127.0.0.1:%d", freePort(c.t))
		c.clients[i] = freePort(c.t)
	}
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	if err := c.tryStart(i); err != nil {
		c.t.Fatalf("bustest: start server %d: %v", i, err)
	}
}

func (c *Cluster) tryStart(i int) error {
	cfg := bus.Config{
		Name: c.Name(i), Port: c.clients[i], StoreDir: c.dirs[i],
		Logger: c.log.With("server", c.Name(i)),
	}
	// One server runs JetStream alone: clustered, it would wait for a
	// quorum of peers forever.
	if c.Size() > 1 {
		cfg.Cluster = bus.Cluster{Name: c.name, Port: portOf(c.routes[i]), Routes: c.routes}
	}
	b, err := bus.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	c.buses[i] = b
	c.mu.Unlock()
	return nil
}

// Bus is server i (nil while it is down).
func (c *Cluster) Bus(i int) *bus.Bus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buses[i]
}

// URL is server i's client URL (valid while it is down too).
func (c *Cluster) URL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.clients[i]) }

// URLs lists every server's client URL, for a client that fails over.
func (c *Cluster) URLs() []string {
	out := make([]string, c.Size())
	for i := range out {
		out[i] = c.URL(i)
	}
	return out
}

// Connect opens a TCP client to server i (closed by the test's cleanup).
// The client reconnects to the other servers when i goes down.
func (c *Cluster) Connect(i int, opts ...nats.Option) *nats.Conn {
	c.t.Helper()
	urls := append([]string{c.URL(i)}, c.URLs()...)
	nc, err := nats.Connect(joinURLs(urls), append([]nats.Option{nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		c.t.Fatalf("bustest: connect to server %d: %v", i, err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// JetStream is a JetStream client connected to server i.
func (c *Cluster) JetStream(i int) jetstream.JetStream {
	c.t.Helper()
	js, err := jetstream.New(c.Connect(i))
	if err != nil {
		c.t.Fatal(err)
	}
	return js
}

// Stop stops server i at once (nats-server's Shutdown, without draining
// the in-process connection).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	b := c.buses[i]
	c.buses[i] = nil
	c.mu.Unlock()
	if b != nil {
		b.Close()
	}
}

// Shutdown stops server i gracefully: the in-process connection drains
// first.
func (c *Cluster) Shutdown(i int) {
	c.mu.Lock()
	b := c.buses[i]
	c.buses[i] = nil
	c.mu.Unlock()
	if b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	}
}

// Restart starts a stopped server i again on its store and ports.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	c.start(i)
}

func (c *Cluster) close() {
	for i := range c.buses {
		c.Stop(i)
	}
}

// takenPorts, for a test of startFirst, are handed out by freePort first.
var takenPorts []int

func freePort(t testing.TB) int {
	t.Helper()
	if len(takenPorts) > 0 {
		p := takenPorts[0]
		takenPorts = takenPorts[1:]
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func portOf(hostport string) int {
	_, p, _ := net.SplitHostPort(hostport)
	var n int
	fmt.Sscan(p, &n)
	return n
}

func joinURLs(urls []string) string {
	s := ""
	for i, u := range urls {
		if i > 0 {
			s += ","
		}
		s += u
	}
	return s
}
