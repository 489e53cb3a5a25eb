package link

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Handler answers one request with the reply to send back; a nil reply
// sends no answer (the caller waits out its deadline, not knowing whether
// the request ran), an empty non-nil one an empty answer. ctx ends when
// the request's connection closes or the server closes; the handler
// bounds its own work otherwise (a forwarded command carries its
// deadline).
//
// Concurrency: called from many goroutines at once, one per request.
type Handler func(ctx context.Context, req []byte) []byte

// ServerConfig configures Serve. The zero value of each field but Handler
// means its default.
type ServerConfig struct {
	// Secret is the cluster secret a dialling node must prove it knows
	// ("" on both sides: no proof asked beyond the empty one).
	Secret string
	// TLS, when set, wraps every accepted connection (set ClientCAs and
	// ClientAuth in it for mutual TLS).
	TLS *tls.Config
	// Handler answers the requests. Required.
	Handler Handler
	// MaxConcurrent bounds the requests being handled at once over all
	// connections; a connection stops reading while it is reached.
	// Default 1,024.
	MaxConcurrent int
	// HandshakeTimeout bounds the TLS and link handshakes of an accepted
	// connection. Default 5 s.
	HandshakeTimeout time.Duration
	// Logger receives refused connections and broken frames. Default:
	// slog.Default().
	Logger *slog.Logger
}

// Server answers requests on a listener until Close.
type Server struct {
	cfg ServerConfig
	ln  net.Listener
	sem chan struct{}
	ctx context.Context // ends at Close
	end context.CancelFunc

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // the accept loop, connections and handlers
}

// Serve answers requests on ln in the background until Close, which also
// closes ln.
func Serve(ln net.Listener, cfg ServerConfig) *Server {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 1024
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, ln: ln, sem: make(chan struct{}, cfg.MaxConcurrent), conns: map[net.Conn]struct{}{}}
	s.ctx, s.end = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.accept()
	return s
}

// Addr is the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, closes every connection and waits for the
// handlers running to return. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.end()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return // closed
		}
		if !s.track(c, true) {
			_ = c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.serveConn(c)
		}()
	}
}

// track adds or removes a connection; adding fails once closed.
func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		_ = c.Close()
		return true
	}
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// handshake runs TLS, then the link's proof of the secret, on an
// accepted connection; it returns the connection to use.
func (s *Server) handshake(c net.Conn) (net.Conn, error) {
	_ = c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if s.cfg.TLS != nil {
		tc := tls.Server(c, s.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	nonce := make([]byte, nonceLen)
	_, _ = rand.Read(nonce)
	if _, err := c.Write(appendHello(nil, nonce)); err != nil {
		return nil, err
	}
	b := make([]byte, authLen)
	if _, err := io.ReadFull(c, b[:5]); err != nil {
		return nil, err
	}
	_, err := parseGreeting(b[:5], "client's greeting")
	if err == nil {
		_, err = io.ReadFull(c, b[5:])
	}
	proof := b[5:]
	if err == nil && !hmac.Equal(proof, mac(s.cfg.Secret, nonce)) {
		err = errors.New("link: the client does not know the cluster secret")
	}
	if err != nil {
		_, _ = c.Write([]byte{1})
		return nil, err
	}
	if _, err := c.Write([]byte{0}); err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// serveConn reads requests until the connection ends, answering each on
// its own goroutine.
func (s *Server) serveConn(raw net.Conn) {
	c, err := s.handshake(raw)
	if err != nil {
		s.cfg.Logger.Warn("link: connection refused", "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	if c != raw {
		// Close the TLS connection (its close_notify) with the raw one.
		defer c.Close()
	}
	var (
		wmu  sync.Mutex
		hwg  sync.WaitGroup
		werr error
	)
	defer hwg.Wait()
	// Cancelled as soon as the connection ends (this runs before the
	// wait above), so the handlers still running learn it.
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	r := bufio.NewReaderSize(c, 32<<10)
	hdr := make([]byte, headerLen)
	for {
		id, req, err := readFrame(r, hdr)
		if err != nil {
			var big *FrameTooLargeError
			if errors.As(err, &big) || errors.Is(err, io.ErrUnexpectedEOF) {
				s.cfg.Logger.Warn("link: broken frame, connection closed", "remote", raw.RemoteAddr().String(), "err", err)
			}
			_ = c.Close() // ends the handlers' writes too
			return
		}
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		hwg.Add(1)
		go func() {
			defer func() { <-s.sem; hwg.Done() }()
			reply := s.cfg.Handler(ctx, req)
			if reply == nil {
				return // no answer
			}
			if len(reply) > MaxFrame {
				s.cfg.Logger.Error("link: a reply over the frame limit was dropped", "bytes", len(reply))
				return // the caller times out: its request may have run
			}
			frame := appendFrame(make([]byte, 0, headerLen+len(reply)), id, reply)
			wmu.Lock()
			defer wmu.Unlock()
			if werr == nil {
				_, werr = c.Write(frame)
			}
		}()
	}
}
