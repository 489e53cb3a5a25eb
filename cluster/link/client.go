package link

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ClientConfig configures NewClient. The zero value of each field means its
// default.
type ClientConfig struct {
	// Secret is the cluster secret to prove to the servers.
	Secret string
	// TLS, when set, is the base of the TLS config of every connection
	// (RootCAs, and Certificates for mutual TLS); ServerName, when empty,
	// is the host of the address dialled.
	TLS *tls.Config
	// DialTimeout bounds a connection's dial and handshakes. Default 1 s.
	DialTimeout time.Duration
	// RetryDialAfter is how long an address whose dial failed fails fast
	// (ErrNotSent) before the next dial. Default 1 s.
	RetryDialAfter time.Duration
}

// Client sends requests to servers, one connection per address, dialled
// on the first request and again after it breaks.
//
// Concurrency: safe for use from many goroutines.
type Client struct {
	cfg ClientConfig

	mu     sync.Mutex
	peers  map[string]*peer
	closed bool
}

// peer is one address: its connection, or the dial in progress, or the
// last dial's failure.
type peer struct {
	ready   chan struct{} // closed when the dial ended
	conn    *conn         // nil if the dial failed
	err     error
	failed  time.Time // when the dial failed
	dropped bool      // Drop or Close was called on it
}

// NewClient returns a client; Close releases its connections.
func NewClient(cfg ClientConfig) *Client {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.RetryDialAfter <= 0 {
		cfg.RetryDialAfter = time.Second
	}
	return &Client{cfg: cfg, peers: map[string]*peer{}}
}

// Call sends req to the server at addr and returns its reply. An error
// that wraps ErrNotSent means that the request did not leave this
// process; any other error means that it may have been handled.
func (c *Client) Call(ctx context.Context, addr string, req []byte) ([]byte, error) {
	if len(req) > MaxFrame {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, &FrameTooLargeError{Size: len(req)})
	}
	cn, err := c.conn(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNotSent, addr, err)
	}
	return cn.call(ctx, req)
}

// Drop closes the connection to addr, if any: the requests waiting on it
// fail at once (it may have handled them). Use it when the node at addr is
// known to be gone.
func (c *Client) Drop(addr string) {
	c.mu.Lock()
	p := c.peers[addr]
	delete(c.peers, addr)
	if p != nil {
		p.dropped = true
	}
	c.mu.Unlock()
	if p != nil {
		go func() {
			<-p.ready
			if p.conn != nil {
				p.conn.fail(errBroken)
			}
		}()
	}
}

// Close closes every connection; later calls return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	peers := c.peers
	c.peers = map[string]*peer{}
	c.mu.Unlock()
	for _, p := range peers {
		<-p.ready
		if p.conn != nil {
			p.conn.fail(ErrClosed)
		}
	}
	return nil
}

// conn returns addr's connection, dialling it if needed (one dial per
// address at a time; the others wait for it).
func (c *Client) conn(ctx context.Context, addr string) (*conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		p := c.peers[addr]
		switch {
		case p == nil:
		case p.conn == nil && p.err == nil:
			// A dial in progress.
		case p.conn != nil && !p.conn.isBroken():
			c.mu.Unlock()
			return p.conn, nil
		case p.err != nil && time.Since(p.failed) < c.cfg.RetryDialAfter:
			c.mu.Unlock()
			return nil, p.err
		default:
			p = nil // broken, or failed long enough ago: dial again
		}
		if p == nil {
			p = &peer{ready: make(chan struct{})}
			c.peers[addr] = p
			c.mu.Unlock()
			cn, err := c.dial(addr)
			c.mu.Lock()
			p.conn, p.err = cn, err
			if err != nil {
				p.failed = time.Now()
			}
			closed := c.closed || p.dropped
			close(p.ready)
			c.mu.Unlock()
			if closed && cn != nil {
				cn.fail(ErrClosed)
				return nil, ErrClosed
			}
			if err != nil {
				return nil, err
			}
			return cn, nil
		}
		c.mu.Unlock()
		select {
		case <-p.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dial connects to addr and runs the handshakes.
func (c *Client) dial(addr string) (*conn, error) {
	d := net.Dialer{Timeout: c.cfg.DialTimeout}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = raw.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	nc := raw
	if c.cfg.TLS != nil {
		cfg := c.cfg.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(raw, cfg)
		if err := tc.Handshake(); err != nil {
			_ = raw.Close()
			return nil, err
		}
		nc = tc
	}
	if err := c.prove(nc); err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	cn := &conn{c: nc, pending: map[uint64]chan result{}, done: make(chan struct{})}
	go cn.read()
	return cn, nil
}

// prove reads the server's hello and proves the secret.
func (c *Client) prove(nc net.Conn) error {
	// The magic first, so that a server of something else (a NATS port
	// given by mistake) is named as such rather than read to a timeout.
	b := make([]byte, helloLen)
	if _, err := io.ReadFull(nc, b[:5]); err != nil {
		return err
	}
	if _, err := parseGreeting(b[:5], "server's greeting"); err != nil {
		return err
	}
	if _, err := io.ReadFull(nc, b[5:]); err != nil {
		return err
	}
	nonce := b[5:]
	if _, err := nc.Write(append(append(append([]byte(nil), magic[:]...), version), mac(c.cfg.Secret, nonce)...)); err != nil {
		return err
	}
	v := make([]byte, 1)
	if _, err := io.ReadFull(nc, v); err != nil {
		return err
	}
	if v[0] != 0 {
		return ErrRefused
	}
	return nil
}

// result is a reply or the error that ended its wait.
type result struct {
	reply []byte
	err   error
}

// conn is one connection and its requests in flight.
type conn struct {
	c   net.Conn
	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan result
	err     error         // set once the connection failed
	done    chan struct{} // closed with err
}

func (cn *conn) isBroken() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err != nil
}

// call sends one request and waits for its reply.
func (cn *conn) call(ctx context.Context, req []byte) ([]byte, error) {
	ch := make(chan result, 1)
	cn.mu.Lock()
	if cn.err != nil {
		err := cn.err
		cn.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	cn.next++
	id := cn.next
	cn.pending[id] = ch
	cn.mu.Unlock()
	frame := appendFrame(make([]byte, 0, headerLen+len(req)), id, req)
	cn.wmu.Lock()
	dl, _ := ctx.Deadline() // zero: none
	_ = cn.c.SetWriteDeadline(dl)
	n, err := cn.c.Write(frame)
	cn.wmu.Unlock()
	if err != nil {
		cn.forget(id)
		cn.fail(errBroken)
		if n == 0 {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
		}
		return nil, fmt.Errorf("link: %w", err)
	}
	select {
	case r := <-ch:
		return r.reply, r.err
	case <-ctx.Done():
		cn.forget(id)
		return nil, ctx.Err()
	}
}

func (cn *conn) forget(id uint64) {
	cn.mu.Lock()
	delete(cn.pending, id)
	cn.mu.Unlock()
}

// fail closes the connection and ends every wait on it with err.
func (cn *conn) fail(err error) {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	cn.err = err
	pending := cn.pending
	cn.pending = nil
	close(cn.done)
	cn.mu.Unlock()
	_ = cn.c.Close()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

// read delivers replies until the connection fails.
func (cn *conn) read() {
	r := bufio.NewReaderSize(cn.c, 32<<10)
	hdr := make([]byte, headerLen)
	for {
		id, reply, err := readFrame(r, hdr)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				err = errBroken
			}
			cn.fail(err)
			return
		}
		cn.mu.Lock()
		ch := cn.pending[id]
		delete(cn.pending, id)
		cn.mu.Unlock()
		if ch != nil {
			ch <- result{reply: reply}
		}
	}
}
