package link_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/link"
	"github.com/troupe-dev/troupe/cluster/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve starts a server on a free loopback port.
func serve(t *testing.T, cfg link.ServerConfig) *link.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	s := link.Serve(ln, cfg)
	t.Cleanup(func() { s.Close() })
	return s
}

func echo(_ context.Context, req []byte) []byte { return append([]byte("re:"), req...) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Many callers share one connection; every reply goes to its own request.
func TestCallsShareAConnectionAndGetTheirOwnReplies(t *testing.T) {
	var conns atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingListener{Listener: ln, n: &conns}
	s := link.Serve(counting, link.ServerConfig{Secret: "s3cret", Handler: func(ctx context.Context, req []byte) []byte {
		if req[0]%3 == 0 {
			time.Sleep(time.Millisecond) // replies come back out of order
		}
		return echo(ctx, req)
	}, Logger: quiet})
	defer s.Close()
	c := link.NewClient(link.ClientConfig{Secret: "s3cret"})
	defer c.Close()
	ctx := ctxT(t, 30*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			for i := range 100 {
				req := fmt.Appendf(nil, "%c caller %d call %d", byte(g+i), g, i)
				got, err := c.Call(ctx, s.Addr().String(), req)
				if err != nil {
					errs <- err
					return
				}
				if want := append([]byte("re:"), req...); !bytes.Equal(got, want) {
					errs <- fmt.Errorf("reply %q to %q", got, req)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for one address, want 1", n)
	}
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// A node that does not know the secret is refused before any request, and
// the request counts as not sent.
func TestAWrongSecretIsRefused(t *testing.T) {
	var handled atomic.Int64
	s := serve(t, link.ServerConfig{Secret: "right", Handler: func(ctx context.Context, req []byte) []byte {
		handled.Add(1)
		return nil
	}})
	for _, secret := range []string{"wrong", ""} {
		c := link.NewClient(link.ClientConfig{Secret: secret})
		_, err := c.Call(ctxT(t, 5*time.Second), s.Addr().String(), []byte("x"))
		c.Close()
		if !errors.Is(err, link.ErrNotSent) || !errors.Is(err, link.ErrRefused) {
			t.Fatalf("secret %q: err = %v, want ErrNotSent and ErrRefused", secret, err)
		}
	}
	if n := handled.Load(); n != 0 {
		t.Fatalf("%d requests handled from refused clients", n)
	}
}

// Nothing listens: not sent, and the address fails fast until it may be
// dialled again.
func TestNoServerIsNotSentAndFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := link.NewClient(link.ClientConfig{RetryDialAfter: 300 * time.Millisecond})
	defer c.Close()
	ctx := ctxT(t, 10*time.Second)
	if _, err := c.Call(ctx, addr, []byte("x")); !errors.Is(err, link.ErrNotSent) {
		t.Fatalf("err = %v, want ErrNotSent", err)
	}
	// Now a server comes up at that address; within RetryDialAfter the
	// client still fails fast, then it dials and gets through.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	s := link.Serve(ln, link.ServerConfig{Handler: echo, Logger: quiet})
	defer s.Close()
	if _, err := c.Call(ctx, addr, []byte("x")); !errors.Is(err, link.ErrNotSent) {
		t.Fatalf("right after a failed dial: err = %v, want ErrNotSent (fail fast)", err)
	}
	time.Sleep(350 * time.Millisecond)
	if got, err := c.Call(ctx, addr, []byte("x")); err != nil || string(got) != "re:x" {
		t.Fatalf("after RetryDialAfter: %q, %v", got, err)
	}
}

// A request that reached the server and got no answer is not "not sent":
// the caller must assume it may have run. The client dials again after.
func TestABrokenConnectionMeansUnknown(t *testing.T) {
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	s := link.Serve(ln, link.ServerConfig{Handler: func(ctx context.Context, req []byte) []byte {
		if string(req) == "hang" {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return echo(ctx, req)
	}, Logger: quiet})
	c := link.NewClient(link.ClientConfig{RetryDialAfter: 10 * time.Millisecond})
	defer c.Close()
	ctx := ctxT(t, 10*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, addr, []byte("hang"))
		done <- err
	}()
	<-started
	s.Close() // the node dies with the request in flight
	close(release)
	err = <-done
	if err == nil || errors.Is(err, link.ErrNotSent) {
		t.Fatalf("err = %v, want an error that is not ErrNotSent", err)
	}
	// A new server at the same address: the client dials it.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	s2 := link.Serve(ln, link.ServerConfig{Handler: echo, Logger: quiet})
	defer s2.Close()
	var got []byte
	for range 50 {
		if got, err = c.Call(ctx, addr, []byte("again")); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || string(got) != "re:again" {
		t.Fatalf("after the restart: %q, %v", got, err)
	}
}

// Drop ends the waits on a connection at once (the node is known gone);
// a deadline ends one wait without breaking the connection.
func TestDropAndDeadlines(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	s := serve(t, link.ServerConfig{Handler: func(ctx context.Context, req []byte) []byte {
		if string(req) == "slow" {
			select {
			case <-block:
			case <-ctx.Done():
			}
		}
		return echo(ctx, req)
	}})
	c := link.NewClient(link.ClientConfig{})
	defer c.Close()
	addr := s.Addr().String()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Call(short, addr, []byte("slow")); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, link.ErrNotSent) {
		t.Fatalf("err = %v, want DeadlineExceeded (sent)", err)
	}
	ctx := ctxT(t, 10*time.Second)
	if got, err := c.Call(ctx, addr, []byte("fast")); err != nil || string(got) != "re:fast" {
		t.Fatalf("after a deadline: %q, %v", got, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, addr, []byte("slow"))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	c.Drop(addr)
	select {
	case err := <-done:
		if err == nil || errors.Is(err, link.ErrNotSent) {
			t.Fatalf("after Drop: err = %v, want an error that is not ErrNotSent", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Drop ended the wait after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drop did not end the wait")
	}
	if got, err := c.Call(ctx, addr, []byte("fast")); err != nil || string(got) != "re:fast" {
		t.Fatalf("after Drop: %q, %v", got, err)
	}
}

func TestTooLargeIsNotSent(t *testing.T) {
	s := serve(t, link.ServerConfig{Handler: echo})
	c := link.NewClient(link.ClientConfig{})
	defer c.Close()
	_, err := c.Call(ctxT(t, 5*time.Second), s.Addr().String(), make([]byte, link.MaxFrame+1))
	var big *link.FrameTooLargeError
	if !errors.Is(err, link.ErrNotSent) || !errors.As(err, &big) || big.Size != link.MaxFrame+1 {
		t.Fatalf("err = %v", err)
	}
}

// A server that is not a link's (a NATS port, say) is refused in the
// handshake, with an error that says so.
func TestNotALinkServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("INFO {\"server_id\":\"x\"}\r\n"))
		time.Sleep(500 * time.Millisecond)
	}()
	c := link.NewClient(link.ClientConfig{})
	defer c.Close()
	_, err = c.Call(ctxT(t, 5*time.Second), ln.Addr().String(), []byte("x"))
	if !errors.Is(err, link.ErrNotSent) || !bytes.Contains([]byte(err.Error()), []byte("not a Troupe link")) {
		t.Fatalf("err = %v", err)
	}
}

// With mutual TLS, a node with a certificate of the cluster's CA gets
// through; one whose certificate another CA signed is refused.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	good, err := node.WriteDevCerts(filepath.Join(dir, "good"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := node.WriteDevCerts(filepath.Join(dir, "other"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	mtls := func(c node.DevCerts) *tls.Config {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			t.Fatal(err)
		}
		pool, err := node.LoadCertPool(c.CA)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	}
	s := serve(t, link.ServerConfig{Secret: "k", TLS: mtls(good), Handler: echo})
	ctx := ctxT(t, 10*time.Second)
	c := link.NewClient(link.ClientConfig{Secret: "k", TLS: mtls(good)})
	defer c.Close()
	if got, err := c.Call(ctx, s.Addr().String(), []byte("x")); err != nil || string(got) != "re:x" {
		t.Fatalf("same CA: %q, %v", got, err)
	}
	bad := link.NewClient(link.ClientConfig{Secret: "k", TLS: mtls(other)})
	defer bad.Close()
	if _, err := bad.Call(ctx, s.Addr().String(), []byte("x")); !errors.Is(err, link.ErrNotSent) {
		t.Fatalf("another CA: err = %v, want ErrNotSent", err)
	}
	plain := link.NewClient(link.ClientConfig{Secret: "k"})
	defer plain.Close()
	if _, err := plain.Call(ctx, s.Addr().String(), []byte("x")); !errors.Is(err, link.ErrNotSent) {
		t.Fatalf("no TLS: err = %v, want ErrNotSent", err)
	}
}

// Close of the client ends its waits; later calls say ErrClosed.
func TestClientClose(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	s := serve(t, link.ServerConfig{Handler: func(ctx context.Context, req []byte) []byte {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil
	}})
	c := link.NewClient(link.ClientConfig{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Call(ctxT(t, 10*time.Second), s.Addr().String(), []byte("x"))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, link.ErrClosed) {
		t.Fatalf("waiting call: err = %v, want ErrClosed", err)
	}
	if _, err := c.Call(context.Background(), s.Addr().String(), []byte("x")); !errors.Is(err, link.ErrClosed) {
		t.Fatalf("after Close: err = %v, want ErrClosed", err)
	}
}

// A nil reply sends no answer (the caller waits out its deadline, and
// the request counts as sent); an empty one is an empty answer.
func TestNilReplyIsNoAnswer(t *testing.T) {
	s := serve(t, link.ServerConfig{Handler: func(_ context.Context, req []byte) []byte {
		if string(req) == "none" {
			return nil
		}
		return []byte{}
	}})
	c := link.NewClient(link.ClientConfig{})
	defer c.Close()
	if got, err := c.Call(ctxT(t, 5*time.Second), s.Addr().String(), []byte("empty")); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty answer: %q (nil %v), %v", got, got == nil, err)
	}
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if got, err := c.Call(short, s.Addr().String(), []byte("none")); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, link.ErrNotSent) {
		t.Fatalf("no answer: %q, %v; want DeadlineExceeded (sent)", got, err)
	}
}

// A handler's ctx ends when its connection does, while it still runs.
func TestHandlerContextEndsWithTheConnection(t *testing.T) {
	started, ended := make(chan struct{}), make(chan struct{})
	s := serve(t, link.ServerConfig{Handler: func(ctx context.Context, _ []byte) []byte {
		close(started)
		<-ctx.Done()
		close(ended)
		return nil
	}})
	c := link.NewClient(link.ClientConfig{})
	defer c.Close()
	go c.Call(context.Background(), s.Addr().String(), []byte("x"))
	<-started
	c.Drop(s.Addr().String())
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's ctx did not end with its connection")
	}
}
