// Package node is the composition root of a Troupe node: it wires the
// journal (Badger), the read store, the embedded NATS server, the protoactor
// actor system, the Wasm plugin host and the API server, starts them in that
// order and stops them in reverse. Embed it to run your own Go actors:
//
//	n, err := node.New(node.Config{
//		DataDir: "data",
//		Setup:   func(rt *actors.Runtime) error { return bank.Register(rt) },
//	})
//	if err != nil { ... }
//	if err := n.Start(ctx); err != nil { ... }
//	<-ctx.Done()
//	n.Shutdown(context.Background())
//
// See docs/architecture.md for the data flow, goroutine ownership and the
// shutdown order.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/codes"
	"github.com/troupe-dev/troupe/actors/topics"
	"github.com/troupe-dev/troupe/cluster/bus"
	"github.com/troupe-dev/troupe/cluster/link"
	"github.com/troupe-dev/troupe/cluster/shards"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/plugins"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// ErrClosed is returned by Start after Shutdown or Close.
var ErrClosed = errors.New("node: closed")

// Node is one Troupe node. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	metrics *prometheus.Registry

	mu      sync.Mutex
	started bool
	closed  bool
	ready   atomic.Bool
	// closers run in reverse order of registration: reverse start order.
	closers []closer

	ident   identity
	cluster *clusterState // nil for a single node
	journal journal.Store
	read    *actors.ReadStore
	bus     *bus.Bus
	system  *actor.ActorSystem
	plugins *plugins.Host
	rt      *actors.Runtime
	topics  *topics.Topics
	api     *api
	// In a cluster: the shard manager (the runtime's placement) and the
	// server of forwarded commands; shardsOn once the manager runs.
	shards  *shards.Manager
	leaders *shards.Leaders
	// checkpoints keeps the reactors' and publisher's checkpoints.
	checkpoints *shards.Checkpoints
	shardSrv    *shardServer
	shardsOn    atomic.Bool
	// The direct forward link (link.go): its server (nil when turned
	// off) and client.
	linkSrv *link.Server
	linkCli *link.Client
	// kinds and queries registered by Setup: metric labels are limited to
	// them so that bad input cannot grow the label space.
	kinds, queries map[string]bool
	ln             net.Listener
	// auth is nil without Config.AuthTokensFile; tls nil without a
	// certificate (auth.go, tls.go).
	auth    *auth
	tls     *tlsFiles
	http    *http.Server
	httpErr chan error
	// tracer records the node's spans; nil when tracing is off.
	tracer trace.Tracer
	// stopping is cancelled when shutdown begins; long-lived streams end.
	stopping   context.Context
	endStreams context.CancelFunc
}

type closer struct {
	name     string
	shutdown func(ctx context.Context) error
}

// New validates cfg and returns a node that is not started yet.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n := &Node{cfg: cfg, log: cfg.Logger, metrics: reg}
	n.stopping, n.endStreams = context.WithCancel(context.Background())
	return n, nil
}

// Start starts every component in order and returns once the API accepts
// requests. On failure it stops what it had started.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if n.started {
		return errors.New("node: already started")
	}
	n.started = true
	defer func() {
		if err != nil {
			n.stopLocked(context.Background())
		}
	}()
	cfg := n.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("node: data dir: %w", err)
	}
	t0 := time.Now()
	if n.ident, err = loadIdentity(cfg.DataDir, cfg.NodeID); err != nil {
		return err
	}
	n.log = cfg.Logger.With("node", n.ident.NodeID)
	// Tracing first, so that it stops last and flushes every span.
	if err := n.startTracing(ctx); err != nil {
		return err
	}
	if err := n.startSecurity(); err != nil {
		return err
	}

	// 1. The write store (journal) and the read store. In a cluster the
	// journal is the replicated one, opened once JetStream runs (below).
	if !cfg.clustered() {
		if n.journal, err = OpenJournal(cfg, false, n.log); err != nil {
			return err
		}
		n.onStop("journal", func(context.Context) error { return n.journal.Close() })
	}
	if n.read, err = actors.OpenReadStore(actors.ReadStoreConfig{Dir: filepath.Join(cfg.DataDir, "read"), Logger: n.log}); err != nil {
		return err
	}
	n.onStop("read store", func(context.Context) error { return n.read.Close() })

	// 2. In a cluster: membership (serf), which names the cluster and
	// gives NATS its routes.
	if cfg.clustered() {
		if err := n.startMembership(ctx); err != nil {
			return err
		}
	}

	// 3. The embedded NATS server: a NATS cluster with JetStream
	// clustered when the node is in a cluster.
	bcfg := bus.Config{
		Name: n.ident.NodeID, Host: cfg.NATSHost, Port: cfg.NATSPort, NoListen: cfg.NATSNoListen,
		StoreDir: filepath.Join(cfg.DataDir, "nats"), Token: cfg.NATSToken, Nkeys: cfg.NATSNkeys,
		MonitorPort: cfg.NATSMonitorPort, MaxPayload: int32(cfg.NATSMaxPayload), Logger: n.log,
	}
	if cfg.clustered() {
		bcfg.Cluster = n.busCluster()
		if !cfg.hasRole(RoleJetStream) {
			bcfg.StoreDir = ""
		}
	}
	busStarted := n.secureBus(&bcfg)
	if !cfg.NATSNoListen && cfg.NATSPort > 0 {
		// The NATS server only logs a taken port and is then never
		// ready: fail at once, naming the port.
		if err := portFree(cfg.NATSHost, cfg.NATSPort); err != nil {
			return fmt.Errorf("node: NATS port %d on %s is not free (--nats-port; another node or nats-server uses it?): %w", cfg.NATSPort, cfg.NATSHost, err)
		}
	}
	if n.bus, err = bus.New(bcfg); err != nil {
		return err
	}
	if err := n.bus.Start(ctx); err != nil {
		return err
	}
	n.onStop("nats", n.bus.Shutdown)
	if busStarted != nil {
		busStarted(n.bus)
	}
	if cfg.clustered() {
		// Announce the route now: the others route to this node, and
		// JetStream (which the journal below needs) forms.
		if err := n.cluster.mem.SetTags(n.tags(n.cluster.clusterID, n.advertised(n.bus.RouteAddr()))); err != nil {
			return fmt.Errorf("node: gossip tags: %w", err)
		}
		n.cluster.attachBus(n.bus)
		// The replicated journal and durable topics are JetStream
		// streams: wait for the cluster's JetStream (bounded).
		wctx, cancel := context.WithTimeout(ctx, max(cfg.JoinTimeout, 2*time.Minute))
		err := n.bus.WaitJetStream(wctx)
		cancel()
		if err != nil {
			return fmt.Errorf("node: waiting for the cluster's JetStream (a majority of its JetStream nodes must run): %w", err)
		}
		if err := n.startSharding(ctx); err != nil {
			return err
		}
	}

	// 3. The actor system.
	n.system = actors.NewSystem(n.log)
	n.onStop("actor system", func(context.Context) error { n.system.Shutdown(); return nil })

	// 4. The plugin host.
	if n.plugins, err = plugins.New(plugins.Config{
		Dir: cfg.PluginDir, CacheDir: filepath.Join(cfg.DataDir, "cache", "wasm"),
		Logger: n.log, Metrics: n.metrics, MemoryBudget: cfg.PluginMemoryBudget,
		Tracer: n.tracer,
	}); err != nil {
		return err
	}
	if err := n.plugins.Start(ctx); err != nil {
		return err
	}
	n.onStop("plugins", func(context.Context) error { return n.plugins.Close() })

	// 5. Topics (pub/sub for actors), through the sidecar chain.
	if n.topics, err = topics.New(topics.Config{
		Conn: n.bus.Conn(), System: n.system, Intercept: n.interceptTopic,
		Logger: n.log, Metrics: n.metrics,
	}); err != nil {
		return err
	}
	n.onStop("topics", func(context.Context) error { return n.topics.Close() })
	for _, d := range cfg.DurableTopics {
		if err := n.topics.Declare(ctx, d); err != nil {
			return err
		}
	}

	// 6. The actors runtime with the user's domain.
	rcfg := actors.Config{
		Journal: n.journal, ReadStore: n.read, System: n.system,
		Intercept: n.intercept, InterceptEvent: n.interceptEvent, Ambassador: n.plugins.Call, Logger: n.log,
		Node: n.ident.NodeID, Tracer: n.tracer,
	}
	am, err := newAppendMetrics(n.metrics)
	if err != nil {
		return err
	}
	rcfg.OnAppend = am.observe
	if n.shards != nil {
		rcfg.Placement = n.shards
		fw := &forwarder{shardOf: n.shards.ShardOf, nc: n.bus.Conn(), link: n.linkCli, linkAddr: n.cluster.linkAddr, ready: n.cluster.readiness}
		for via, c := range map[string]*atomic.Int64{"link": &fw.direct, "nats": &fw.viaNATS} {
			n.metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "troupe_forward_attempts_total", ConstLabels: prometheus.Labels{"via": via},
				Help: "Attempts to forward a command to its shard's owner, over the direct link or NATS.",
			}, func() float64 { return float64(c.Load()) }))
		}
		rcfg.Forwarder = n.withTracing(fw)
		rcfg.Leader = n.leaders
		rcfg.Checkpoints = n.checkpoints
	}
	if n.rt, err = actors.NewRuntime(rcfg); err != nil {
		return err
	}
	if cfg.Setup != nil {
		if err := cfg.Setup(n.rt); err != nil {
			return fmt.Errorf("node: setup: %w", err)
		}
	}
	if cfg.EventSubject != "-" || len(cfg.EventSubjectByKind) > 0 {
		if err := n.rt.RegisterProjection(n.eventsPublisherProjection()); err != nil {
			return err
		}
	}
	if err := n.rt.Start(ctx); err != nil {
		return err
	}
	n.kinds, n.queries = map[string]bool{}, map[string]bool{}
	for _, k := range n.rt.Kinds() {
		n.kinds[k.Name()] = true
	}
	for _, q := range n.rt.QueryNames() {
		n.queries[q] = true
	}
	if err := n.metrics.Register(newProjectionCollector(n.rt)); err != nil {
		return err
	}
	// In a cluster each shard's events are published by its owner, which
	// drains them when it hands the shard over.
	publishes := (cfg.EventSubject != "-" || len(cfg.EventSubjectByKind) > 0) && n.shards == nil
	n.onStop("actors", func(ctx context.Context) error {
		if ctx.Err() != nil {
			return n.rt.Close()
		}
		if publishes {
			// The API has stopped and finished its requests: every
			// acknowledged command is in the log. Publish all of it
			// while NATS is still up, before the runtime stops the
			// publisher (it would otherwise publish the rest only
			// when the node starts again).
			n.drainEventsPublisher(ctx)
		}
		return n.rt.Shutdown(ctx)
	})

	if n.shards != nil {
		// The forward link answers with the runtime: it listens only
		// now (a node restarted on a fixed --forward-port may be
		// dialled at its old address before it gossips the new one).
		if err := n.startLink(); err != nil {
			return err
		}
		n.startShards()
	}

	// 7. The API: commands as NATS requests, then HTTP.
	n.api = &api{n: n, m: newAPIMetrics(n.metrics)}
	if cfg.CommandSubjectPrefix != "-" {
		if err := n.startCommandRequests(); err != nil {
			return err
		}
	}
	if err := n.startHTTP(); err != nil {
		return err
	}
	if cfg.clustered() {
		// Announce the API and NATS addresses, follow membership with the
		// routes, and check readiness. On shutdown, leaving the cluster
		// comes first, so that peers see "left" while this node still
		// serves.
		if err := n.clusterStarted(); err != nil {
			return err
		}
		n.onStop("leave cluster", n.cluster.leave)
		n.onStop("singletons", n.stopLeaders)
	}
	n.ready.Store(true)
	attrs := []any{"http", n.HTTPAddr(), "nats", n.bus.ClientURL(), "data", cfg.DataDir,
		"sync", cfg.Sync, "plugins", cfg.PluginDir}
	if n.cluster != nil {
		attrs = append(attrs, "cluster", n.cluster.clusterID, "gossip", n.cluster.mem.Addr(), "route", n.bus.RouteAddr())
	}
	n.log.Info("node ready", append(attrs, "took", time.Since(t0).Round(time.Millisecond))...)
	return nil
}

func (n *Node) onStop(name string, f func(ctx context.Context) error) {
	n.closers = append(n.closers, closer{name, f})
}

// interceptTopic runs the sidecar plugin chain on a topic message.
func (n *Node) interceptTopic(ctx context.Context, msg *troupev1.TopicMessage) error {
	d, err := n.plugins.Topic(ctx, msg)
	if err != nil {
		return err
	}
	if d.Rejected {
		return &actors.RejectedError{Reason: fmt.Sprintf("plugin %s: %s", d.Plugin, d.Reason)}
	}
	return nil
}

// interceptEvent runs the sidecar plugin chain on an event on its way to
// a projection.
func (n *Node) interceptEvent(ctx context.Context, projection string, ev *journal.Event) error {
	pe := EventToProto(*ev)
	d, err := n.plugins.Event(ctx, projection, pe)
	if err != nil {
		return err
	}
	if d.Rejected {
		return &actors.RejectedError{Reason: fmt.Sprintf("plugin %s: %s", d.Plugin, d.Reason)}
	}
	ev.Payload, ev.Metadata = pe.GetPayload(), pe.GetMetadata()
	return nil
}

// Topics is the node's pub/sub for actors (nil before Start).
func (n *Node) Topics() *topics.Topics { return n.topics }

// intercept runs the sidecar plugin chain on a command.
// A rejection is failed_precondition unless the plugin named another code
// (a rate limit: resource_exhausted with a retry hint); a plugin that
// failed under on_failure = "reject" is the server's fault (unavailable,
// or deadline_exceeded when it ran out of time), see docs/errors.md.
func (n *Node) intercept(ctx context.Context, cmd *troupev1.Command) error {
	d, err := n.plugins.Command(ctx, cmd)
	if err != nil {
		return err
	}
	if !d.Rejected {
		return nil
	}
	if d.Err != nil {
		return &pluginFailure{plugin: d.Plugin, err: d.Err}
	}
	if d.Code != "" && d.Code != codes.FailedPrecondition.String() {
		msg := fmt.Sprintf("rejected: plugin %s: %s", d.Plugin, d.Reason)
		if d.RetryAfter > 0 {
			msg += fmt.Sprintf(" (retry after %v)", d.RetryAfter)
		}
		return &retryAfterError{err: &codes.Error{Code: codes.Parse(d.Code), Message: msg}, after: d.RetryAfter}
	}
	return &actors.RejectedError{Reason: fmt.Sprintf("plugin %s: %s", d.Plugin, d.Reason)}
}

func (n *Node) startHTTP() error {
	mux := http.NewServeMux()
	// Answers under 1 KiB go uncompressed whatever the client accepts:
	// gzip's set-up alone cost about 4 % of a node's CPU under load for
	// replies of a few dozen bytes that it could not shrink.
	opts := append(codecOptions(), connect.WithReadMaxBytes(n.cfg.MaxRequestBytes), connect.WithCompressMinBytes(1024))
	a := n.api
	mux.Handle(troupev1connect.NewCommandServiceHandler(a, opts...))
	mux.Handle(troupev1connect.NewQueryServiceHandler(a, opts...))
	mux.Handle(troupev1connect.NewEventServiceHandler(a, opts...))
	mux.Handle(troupev1connect.NewProjectionServiceHandler(a, opts...))
	mux.Handle(troupev1connect.NewPluginServiceHandler(a, opts...))
	mux.Handle(troupev1connect.NewClusterServiceHandler(clusterAPI{n}, opts...))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ok, reason := n.Ready(); !ok {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.metrics, promhttp.HandlerOpts{}))
	mux.Handle("/ui/", n.dashboard()) // the web dashboard: dashboard.go
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		code, msg := edgeError(r, http.StatusNotFound, "", n.cfg.MaxRequestBytes)
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// A gRPC client reads a status, not a body.
			w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
			w.Header().Set("Grpc-Status", strconv.Itoa(int(connectCodes[codes.Parse(code)])))
			w.Header().Set("Grpc-Message", grpcPercentEncode(msg))
			w.WriteHeader(http.StatusOK)
			return
		}
		writeJSONError(w, http.StatusNotFound, code, msg)
	})

	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("node: http: %w", err)
	}
	if n.tls != nil {
		ln = tls.NewListener(ln, n.tls.server())
	}
	n.ln = ln
	protocols := new(http.Protocols)
	protocols.SetHTTP2(n.tls != nil)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // gRPC without TLS on loopback
	n.http = &http.Server{
		Handler:           errorBodies(n.cfg.MaxRequestBytes, n.guard(refuseUnsupportedEncoding(http.MaxBytesHandler(mux, int64(n.cfg.MaxRequestBytes)+4096)))),
		Protocols:         protocols,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	n.httpErr = make(chan error, 1)
	go func() { n.httpErr <- n.http.Serve(ln) }()
	n.onStop("http", func(ctx context.Context) error {
		n.ready.Store(false)
		n.endStreams()
		var err error
		if ctx.Err() != nil {
			err = n.http.Close()
		} else {
			err = n.http.Shutdown(ctx)
		}
		if serr := <-n.httpErr; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	})
	return nil
}

// Ready reports whether the node serves: started and not stopping, and in
// a cluster, joined with a majority in sight and JetStream answering.
// When not, reason says why.
func (n *Node) Ready() (bool, string) {
	if !n.ready.Load() {
		return false, "starting or stopping"
	}
	if n.cluster != nil {
		return n.cluster.readiness()
	}
	return true, ""
}

// ID is the node's id ("" before Start).
func (n *Node) ID() string { return n.ident.NodeID }

// HTTPAddr is the address the API listens on ("" before Start).
func (n *Node) HTTPAddr() string {
	if n.ln == nil {
		return ""
	}
	return n.ln.Addr().String()
}

// Runtime is the node's actor runtime (nil before Start).
func (n *Node) Runtime() *actors.Runtime { return n.rt }

// Journal is the node's event store (nil before Start).
func (n *Node) Journal() journal.Store { return n.journal }

// Bus is the node's embedded NATS server (nil before Start).
func (n *Node) Bus() *bus.Bus { return n.bus }

// Plugins is the node's plugin host (nil before Start).
func (n *Node) Plugins() *plugins.Host { return n.plugins }

// head is the number of positions in the log: the sum over its partitions
// of their last positions (on a single node, the last global position).
func (n *Node) head() uint64 {
	var h uint64
	for p := range n.journal.Partitions() {
		h += n.journal.LastPosition(p)
	}
	return h
}

// Metrics is the registry served on /metrics.
func (n *Node) Metrics() *prometheus.Registry { return n.metrics }

// Shutdown stops the node gracefully in reverse start order: the API stops
// taking requests and finishes those in flight, the actors drain, then
// plugins, NATS, and the stores close. It is bounded by ctx and by
// Config.ShutdownTimeout.
func (n *Node) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ShutdownTimeout)
	defer cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopLocked(ctx)
}

// Close stops the node at once. It is idempotent.
func (n *Node) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopLocked(ctx)
}

func (n *Node) stopLocked(ctx context.Context) error {
	n.closed = true
	n.ready.Store(false)
	var errs []error
	for i := len(n.closers) - 1; i >= 0; i-- {
		c := n.closers[i]
		if err := c.shutdown(ctx); err != nil {
			n.log.Error("stop failed", "component", c.name, "err", err)
			errs = append(errs, fmt.Errorf("stop %s: %w", c.name, err))
		}
	}
	n.endStreams()
	if len(n.closers) > 0 {
		n.log.Info("node stopped")
	}
	n.closers = nil
	return errors.Join(errs...)
}

// portFree reports whether a TCP listener can bind host:port now.
func portFree(host string, port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return ln.Close()
}

// drainEventsPublisher waits, bounded by ctx, until the events publisher
// has published (and flushed) every event committed so far.
func (n *Node) drainEventsPublisher(ctx context.Context) {
	head := n.head()
	start := time.Now()
	if err := n.rt.WaitProjection(ctx, eventsPublisher, head, nil); err != nil {
		n.log.Warn("events not all published before stop; the rest follow at the next start",
			"head", head, "err", err)
		return
	}
	n.log.Debug("events published before stop", "head", head, "took", time.Since(start))
}
