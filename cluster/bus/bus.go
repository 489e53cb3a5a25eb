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
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("bus: closed")

// RandomPort asks the server to pick a free client port.
const RandomPort = server.RANDOM_PORT

// Config configures the embedded server. The zero value listens on
// 127.0.0.1:4222 without JetStream.
type Config struct {
	// Name is the server's name, unique in a cluster. Default: "troupe".
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
	// Logger receives the server's logs with component=nats.
	Logger *slog.Logger
}

// Bus is a running embedded NATS server plus an in-process connection.
type Bus struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	srv    *server.Server
	nc     *nats.Conn
	closed bool
}

// New validates cfg and returns a bus that is not started yet.
func New(cfg Config) (*Bus, error) {
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
	if b.cfg.StoreDir != "" {
		opts.JetStream = true
		opts.StoreDir = b.cfg.StoreDir
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
	b.srv, b.nc = srv, nc
	if b.cfg.StoreDir != "" {
		if err := b.waitJetStream(ctx); err != nil {
			b.closeLocked()
			return err
		}
	}
	b.log.Info("nats ready", "url", b.clientURL())
	return nil
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
