package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// tokenTable is a token → permissions table the test changes while clients
// are connected, as the node does when its token file is reloaded.
type tokenTable struct {
	mu sync.Mutex
	m  map[string]*Permissions
}

func (tt *tokenTable) set(tok string, p *Permissions, ok bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if ok {
		tt.m[tok] = p
	} else {
		delete(tt.m, tok)
	}
}

func (tt *tokenTable) check(tok string) (*Permissions, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	p, ok := tt.m[tok]
	return p, ok
}

// Reauthorize applies changed tokens to connections that are already open:
// a removed token's connection is closed, a narrowed one's next publish is
// a permission violation, and the node's own connection is untouched.
func TestReauthorizeAppliesTokenChangesToOpenConnections(t *testing.T) {
	readOnly := &Permissions{PublishAllow: []string{"_INBOX.>"}}
	table := &tokenTable{m: map[string]*Permissions{"gone": nil, "narrowed": nil, "kept": nil}}
	b, err := New(Config{Port: RandomPort, Authenticate: table.check})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// The node answers on cmd.> through its own connection.
	self := b.Conn()
	if _, err := self.Subscribe("cmd.>", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	if err := self.Flush(); err != nil {
		t.Fatal(err)
	}

	type client struct {
		nc     *nats.Conn
		errs   chan error
		closed chan struct{}
	}
	dial := func(tok string) client {
		c := client{errs: make(chan error, 16), closed: make(chan struct{})}
		nc, err := nats.Connect(b.ClientURL(), nats.Token(tok), nats.NoReconnect(),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case c.errs <- err:
				default:
				}
			}),
			nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }))
		if err != nil {
			t.Fatalf("connect with %q: %v", tok, err)
		}
		c.nc = nc
		t.Cleanup(nc.Close)
		return c
	}
	gone, narrowed, kept := dial("gone"), dial("narrowed"), dial("kept")
	for _, c := range []client{gone, narrowed, kept} {
		if _, err := c.nc.Request("cmd.a", nil, 5*time.Second); err != nil {
			t.Fatalf("a command before the change: %v", err)
		}
	}

	table.set("gone", nil, false)
	table.set("narrowed", readOnly, true)
	table.set("fresh", nil, true)
	if err := b.Reauthorize(); err != nil {
		t.Fatal(err)
	}

	select {
	case <-gone.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the removed token's connection is still open")
	}
	// (The server sends -ERR 'Authorization Violation' and closes; the
	// client may see the close before the error, so only the close is
	// asserted.)

	if _, err := narrowed.nc.Request("cmd.b", nil, 300*time.Millisecond); err == nil {
		t.Fatal("the narrowed token's command was answered")
	}
	select {
	case err := <-narrowed.errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "cmd.b") {
			t.Fatalf("narrowed token's command: %v, want a publish permission violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation for the narrowed token's command")
	}
	if narrowed.nc.IsClosed() {
		t.Fatal("the narrowed token's connection was closed, want it kept with fewer permissions")
	}

	if _, err := kept.nc.Request("cmd.c", nil, 5*time.Second); err != nil {
		t.Fatalf("an unchanged token's command after the change: %v", err)
	}
	fresh := dial("fresh")
	if _, err := fresh.nc.Request("cmd.d", nil, 5*time.Second); err != nil {
		t.Fatalf("a new token's command: %v", err)
	}
	if s := self.Stats(); s.Reconnects != 0 || !self.IsConnected() {
		t.Fatalf("the node's own connection: connected %v, %d reconnects; want it untouched", self.IsConnected(), s.Reconnects)
	}
}

func TestReauthorizeWithoutAuthenticateIsANoOp(t *testing.T) {
	b, err := New(Config{NoListen: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Reauthorize(); !errors.Is(err, ErrClosed) {
		t.Fatalf("before Start: %v, want ErrClosed", err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Reauthorize(); err != nil {
		t.Fatal(err)
	}
}

// A route change reloads the server's options too, which re-checks every
// client: the node's own connection must survive it.
func TestSetRoutesKeepsTheNodesOwnConnectionWithAuthenticate(t *testing.T) {
	port, other := freePort(t), freePort(t)
	self := fmt.Sprintf("127.0.0.1:%d", port)
	b, err := New(Config{
		Name: "s1", Port: RandomPort, Authenticate: func(string) (*Permissions, bool) { return nil, false },
		Cluster: Cluster{Name: "test", Port: port, Routes: []string{self}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	nc := b.Conn()
	if err := b.SetRoutes([]string{self, fmt.Sprintf("127.0.0.1:%d", other)}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := nc.Stats(); s.Reconnects != 0 || !nc.IsConnected() {
		t.Fatalf("the node's own connection after a route change: connected %v, %d reconnects", nc.IsConnected(), s.Reconnects)
	}
}
