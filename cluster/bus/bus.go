// Package bus embeds the NATS server every Troupe node carries: it is the
// node's message bus for pub/sub, for commands between nodes, and (with
// JetStream) for durable topics. Local components talk to it through an
// in-process connection that needs no socket; external NATS clients connect
// to the client port.
//
//	b, err := bus.New(bus.Config{StoreDir: "data/nats", Port: -1})
//	if err != nil { ... }
//	if err := b.Start(ctx); err != nil { ... }
//	defer b.Close()
//	b.Conn().Publish("troupe.hello", []byte("hi"))
package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("bus: closed")

// RandomPort asks the server to pick a free client port.
const RandomPort = server.RANDOM_PORT

// Config configures the embedded server. The zero value listens on
// 127.0.0.1:4222 without JetStream.
type Config struct {
	// Name is the server's name, unique in a cluster (the node id).
	// Default: "troupe".
	Name string
	// Host is the client listen address. Default: 127.0.0.1 (loopback only).
	Host string
	// Port is the client port: 0 means 4222, RandomPort (-1) picks a free
	// port (tests). Ignored when NoListen is set.
	Port int
	// NoListen serves in-process connections only: no TCP port at all.
	NoListen bool
	// StoreDir enables JetStream with its storage in this directory.
	StoreDir string
	// MaxPayload caps one message's size in bytes. Default: 1 MiB (NATS's).
	MaxPayload int32
	// Token, when set, is required from every client, external and
	// in-process ("nats://TOKEN@host:port" or the client's token option).
	Token string
	// Nkeys, when set, are the public user nkeys ("U...") allowed to
	// connect; clients sign the server's nonce with their seed. Exclusive
	// with Token. The node's in-process connection gets a key of its own.
	Nkeys []string
	// MonitorPort serves NATS's HTTP monitoring endpoints (/varz, /connz,
	// /jsz, ...) on Host; 0 disables it, -1 picks a free port.
	MonitorPort int
	// WriteDeadline bounds how long the server waits on a slow client's
	// socket before it cuts the client off (NATS's slow-consumer
	// handling). Default: 10s.
	WriteDeadline time.Duration
	// ReadyTimeout bounds how long Start waits for the server. Default: 10s.
	ReadyTimeout time.Duration
	// Authenticate, when set, checks every client connection by the token
	// it presents (nats.Token, or "nats://TOKEN@host:port") and returns
	// the permissions of that client (nil: every subject); ok false
	// refuses the connection. It is called on the server's connection
	// goroutines, for every new connection, and must be safe for
	// concurrent use. Reauthorize calls it again for every open
	// connection, so that changed tokens apply to open connections too
	// (otherwise only to the next ones). Exclusive with Token and Nkeys.
	// The node's in-process connection presents a random token of its own
	// and may use every subject; routes keep their own credentials
	// (Cluster.User).
	Authenticate func(token string) (perms *Permissions, ok bool)
	// TLS, when set, is required on the client port (the in-process
	// connection needs none). Build it with the certificate and key the
	// server presents.
	TLS *tls.Config

	// Cluster makes the server one of a NATS cluster (with JetStream
	// clustered when StoreDir is set); the zero value is a lone server.
	Cluster Cluster
	// Logger receives the server's logs with component=nats.
	Logger *slog.Logger
}

// Cluster configures the routes between the servers of a NATS cluster. In
// a Troupe cluster the routes come from serf membership and change at run
// time (Bus.SetRoutes).
type Cluster struct {
	// Name is the NATS cluster name, the same on every server ("" = no
	// cluster).
	Name string
	// Host and Port are where routes from other servers connect.
	// Port RandomPort picks a free port. Default host: Config.Host.
	Host string
	Port int
	// Advertise is the host:port other servers dial (default: Host:Port).
	Advertise string
	// Routes are the host:port route addresses of other servers (our own
	// may be among them: the server skips itself). A lone first server
	// lists only its own, so that JetStream can start clustered.
	Routes []string
	// User and Password, when set, are required from every route and
	// presented to every route this server dials.
	User, Password string
	// TLS, when set, secures the routes in both directions: the server
	// presents Certificates to the routes it accepts and dials, verifies
	// dialled servers against RootCAs and, when ClientAuth asks for it,
	// accepted ones against ClientCAs (mutual TLS between nodes).
	TLS *tls.Config
}

// Permissions limit the subjects a client may publish to and subscribe
// to (NATS subject wildcards). An empty allow list allows every subject;
// a deny entry wins over an allow entry.
type Permissions struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
}

// Bus is a running embedded NATS server plus an in-process connection.
type Bus struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	srv    *server.Server
	opts   *server.Options // as started; SetRoutes reloads a copy
	nc     *nats.Conn
	closed bool
}

// New validates cfg and returns a bus that is not started yet.
func New(cfg Config) (*Bus, error) {
	if electionTimeoutErr != nil {
		return nil, electionTimeoutErr
	}
	if cfg.Name == "" {
		cfg.Name = "troupe"
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Port < RandomPort || cfg.Port > 65535 {
		return nil, fmt.Errorf("bus: port %d out of range", cfg.Port)
	}
	if cfg.MaxPayload < 0 {
		return nil, fmt.Errorf("bus: negative max payload %d", cfg.MaxPayload)
	}
	if cfg.Token != "" && len(cfg.Nkeys) > 0 {
		return nil, errors.New("bus: a token and nkeys are exclusive: choose one way to authenticate clients")
	}
	if cfg.Authenticate != nil && (cfg.Token != "" || len(cfg.Nkeys) > 0) {
		return nil, errors.New("bus: Authenticate excludes a token and nkeys: choose one way to authenticate clients")
	}
	for _, k := range cfg.Nkeys {
		if !nkeys.IsValidPublicUserKey(k) {
			return nil, fmt.Errorf("bus: %q is not a public user nkey (U...)", k)
		}
	}
	if cfg.MonitorPort < RandomPort || cfg.MonitorPort > 65535 {
		return nil, fmt.Errorf("bus: monitor port %d out of range", cfg.MonitorPort)
	}
	if cfg.WriteDeadline == 0 {
		cfg.WriteDeadline = 10 * time.Second
	}
	if c := cfg.Cluster; c.Name != "" {
		if c.Port < RandomPort || c.Port > 65535 || c.Port == 0 {
			return nil, fmt.Errorf("bus: cluster port %d out of range", c.Port)
		}
		if (c.User == "") != (c.Password == "") {
			return nil, errors.New("bus: route user and password go together")
		}
		if _, err := routeURLs(c, c.Routes); err != nil {
			return nil, err
		}
	}
	return &Bus{cfg: cfg, log: cfg.Logger.With("component", "nats")}, nil
}

// Start starts the server and returns once it accepts connections and the
// in-process connection is up.
func (b *Bus) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.srv != nil {
		return errors.New("bus: already started")
	}
	opts := &server.Options{
		ServerName:    b.cfg.Name,
		Host:          b.cfg.Host,
		Port:          b.cfg.Port,
		DontListen:    b.cfg.NoListen,
		MaxPayload:    b.cfg.MaxPayload,
		Authorization: b.cfg.Token,
		HTTPHost:      b.cfg.Host,
		HTTPPort:      b.cfg.MonitorPort,
		WriteDeadline: b.cfg.WriteDeadline,
		NoSigs:        true, // the node owns signal handling
	}
	var self nkeys.KeyPair
	if len(b.cfg.Nkeys) > 0 {
		var err error
		if self, err = nkeys.CreateUser(); err != nil {
			return fmt.Errorf("bus: node nkey: %w", err)
		}
		pub, _ := self.PublicKey()
		for _, k := range append([]string{pub}, b.cfg.Nkeys...) {
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
		}
	}
	var selfToken string
	if b.cfg.Authenticate != nil {
		var err error
		if selfToken, err = randomToken(); err != nil {
			return fmt.Errorf("bus: node token: %w", err)
		}
		opts.CustomClientAuthentication = &tokenAuth{self: selfToken, check: b.cfg.Authenticate}
	}
	if b.cfg.TLS != nil {
		opts.TLSConfig = b.cfg.TLS
		opts.TLSTimeout = 5 // seconds, for the handshake
	}
	if b.cfg.StoreDir != "" {
		opts.JetStream = true
		opts.StoreDir = b.cfg.StoreDir
	}
	if c := b.cfg.Cluster; c.Name != "" {
		host := c.Host
		if host == "" {
			host = b.cfg.Host
		}
		opts.Cluster = server.ClusterOpts{
			Name: c.Name, Host: host, Port: c.Port, Advertise: c.Advertise,
			Username: c.User, Password: c.Password,
			// Re-dial a route that drops, forever: members come back.
			ConnectRetries: -1,
		}
		if c.TLS != nil {
			opts.Cluster.TLSConfig = c.TLS
			opts.Cluster.TLSTimeout = 5
		}
		opts.Routes, _ = routeURLs(c, c.Routes)
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	// The stock logger exits the process on fatal errors; ours only logs.
	srv.SetLoggerV2(logAdapter{b.log}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(b.cfg.ReadyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("bus: server not ready after %s", b.cfg.ReadyTimeout)
	}
	copts := []nats.Option{nats.InProcessServer(srv), nats.Name("troupe-node")}
	if b.cfg.Token != "" {
		copts = append(copts, nats.Token(b.cfg.Token))
	}
	if selfToken != "" {
		copts = append(copts, nats.Token(selfToken))
	}
	if self != nil {
		pub, _ := self.PublicKey()
		copts = append(copts, nats.Nkey(pub, self.Sign))
	}
	nc, err := nats.Connect("", copts...)
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("bus: in-process connection: %w", err)
	}
	b.srv, b.nc, b.opts = srv, nc, opts
	if b.cfg.StoreDir != "" && b.cfg.Cluster.Name == "" {
		if err := b.waitJetStream(ctx); err != nil {
			b.closeLocked()
			return err
		}
	}
	b.log.Info("nats ready", "url", b.clientURL())
	return nil
}

// routeURLs turns route addresses into route URLs with the credentials.
func routeURLs(c Cluster, hostports []string) ([]*url.URL, error) {
	out := make([]*url.URL, 0, len(hostports))
	for _, hp := range hostports {
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return nil, fmt.Errorf("bus: route address %q: %w", hp, err)
		}
		u := &url.URL{Scheme: "nats-route", Host: hp}
		if c.User != "" {
			u.User = url.UserPassword(c.User, c.Password)
		}
		out = append(out, u)
	}
	return out, nil
}

// SetRoutes replaces the route addresses (host:port of other servers'
// route ports) at run time: new ones are dialled, removed ones are no
// longer re-dialled. Only for a clustered bus.
func (b *Bus) SetRoutes(hostports []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return ErrClosed
	}
	if b.cfg.Cluster.Name == "" {
		return errors.New("bus: not clustered")
	}
	urls, err := routeURLs(b.cfg.Cluster, hostports)
	if err != nil {
		return err
	}
	if sameRoutes(b.opts.Routes, urls) {
		return nil
	}
	next := b.opts.Clone()
	next.Routes = urls
	if err := b.srv.ReloadOptions(next); err != nil {
		return fmt.Errorf("bus: set routes: %w", err)
	}
	b.opts = next
	return nil
}

// Reauthorize checks every open client connection again with
// Config.Authenticate, as if it connected now: a connection whose token is
// no longer accepted is closed with an authorization violation, the others
// get the permissions Authenticate returns now (and lose subscriptions
// those no longer allow). Call it after the tokens behind Authenticate
// changed; without Authenticate it does nothing. The node's in-process
// connection and the routes are kept.
//
// It reloads the server's options unchanged: nats-server re-runs its
// client authentication on every reload (reload.go, reloadAuthorization).
func (b *Bus) Reauthorize() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return ErrClosed
	}
	if b.cfg.Authenticate == nil {
		return nil
	}
	next := b.opts.Clone()
	if err := b.srv.ReloadOptions(next); err != nil {
		return fmt.Errorf("bus: reauthorize clients: %w", err)
	}
	b.opts = next
	return nil
}

func sameRoutes(a, b []*url.URL) bool {
	if len(a) != len(b) {
		return false
	}
	seen := make(map[string]bool, len(a))
	for _, u := range a {
		seen[u.String()] = true
	}
	for _, u := range b {
		if !seen[u.String()] {
			return false
		}
	}
	return true
}

// RouteAddr is the address routes from other servers connect to ("" when
// not clustered).
func (b *Bus) RouteAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil || b.cfg.Cluster.Name == "" {
		return ""
	}
	if a := b.srv.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Route is a route to another server of the cluster.
type Route struct {
	// Server is the other server's name (its node id).
	Server string
	// Addr is the remote address of the route connection.
	Addr string
}

// ClusterState is this server's view of its NATS cluster.
type ClusterState struct {
	// Routes are the routes that are up, one per remote server.
	Routes []Route
	// MetaLeader is the server name of the JetStream meta leader as this
	// server knows it ("" when none: no quorum, or not clustered).
	MetaLeader string
	// MetaSize is the number of servers in the JetStream meta group.
	MetaSize int
}

// State reports this server's view of its cluster.
func (b *Bus) State() ClusterState {
	b.mu.Lock()
	srv := b.srv
	b.mu.Unlock()
	var st ClusterState
	if srv == nil {
		return st
	}
	if rz, err := srv.Routez(&server.RoutezOptions{}); err == nil {
		seen := map[string]bool{}
		for _, r := range rz.Routes {
			if r.RemoteName == "" || seen[r.RemoteName] {
				continue
			}
			seen[r.RemoteName] = true
			st.Routes = append(st.Routes, Route{Server: r.RemoteName, Addr: net.JoinHostPort(r.IP, strconv.Itoa(r.Port))})
		}
		sort.Slice(st.Routes, func(i, j int) bool { return st.Routes[i].Server < st.Routes[j].Server })
	}
	if js, err := srv.Jsz(&server.JSzOptions{}); err == nil && js.Meta != nil {
		st.MetaLeader, st.MetaSize = js.Meta.Leader, js.Meta.Size
	}
	return st
}

// JetStreamReady reports whether JetStream answers requests: for a
// clustered server, that it has a meta leader it can reach.
func (b *Bus) JetStreamReady(ctx context.Context) error {
	b.mu.Lock()
	nc := b.nc
	b.mu.Unlock()
	if nc == nil {
		return ErrClosed
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("bus: jetstream not answering: %w", err)
	}
	return nil
}

// WaitJetStream waits (bounded by ctx) until JetStreamReady succeeds.
func (b *Bus) WaitJetStream(ctx context.Context) error {
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err := b.JetStreamReady(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *Bus) waitJetStream(ctx context.Context) error {
	deadline := time.Now().Add(b.cfg.ReadyTimeout)
	for {
		if b.srv.JetStreamEnabled() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bus: jetstream not ready after %s", b.cfg.ReadyTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Conn is the in-process connection; nil before Start.
func (b *Bus) Conn() *nats.Conn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nc
}

// MonitorURL is the base URL of the monitoring endpoints ("" when off).
func (b *Bus) MonitorURL() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil || b.cfg.MonitorPort == 0 {
		return ""
	}
	if a := b.srv.MonitorAddr(); a != nil {
		return "http://" + a.String()
	}
	return ""
}

// ClientURL is the URL external NATS clients use ("" when not listening).
func (b *Bus) ClientURL() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.clientURL()
}

func (b *Bus) clientURL() string {
	if b.srv == nil || b.cfg.NoListen {
		return ""
	}
	return b.srv.ClientURL()
}

// Shutdown drains the in-process connection (delivering what is in flight)
// and stops the server, bounded by ctx.
func (b *Bus) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	nc := b.nc
	b.mu.Unlock()
	if nc != nil && !nc.IsClosed() {
		done := make(chan struct{})
		nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := nc.Drain(); err == nil {
			select {
			case <-done:
			case <-ctx.Done():
			}
		}
	}
	return b.Close()
}

// Close stops the server at once. It is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeLocked()
	return nil
}

func (b *Bus) closeLocked() {
	b.closed = true
	if b.nc != nil {
		b.nc.Close()
		b.nc = nil
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
		b.srv = nil
	}
}

// logAdapter sends the server's logs to slog. Notices (the start-up banner,
// connection chatter) are debug; warnings and errors keep their level.
type logAdapter struct{ l *slog.Logger }

func (a logAdapter) Noticef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a logAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a logAdapter) Fatalf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...), "fatal", true) }
func (a logAdapter) Errorf(f string, v ...any)  { a.l.Error(fmt.Sprintf(f, v...)) }
func (a logAdapter) Debugf(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a logAdapter) Tracef(f string, v ...any)  { a.l.Debug(fmt.Sprintf(f, v...), "trace", true) }
