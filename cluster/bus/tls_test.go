package bus_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/bus"
	"github.com/troupe-dev/troupe/cluster/node"
)

func routeTLS(t *testing.T, c node.DevCerts) *tls.Config {
	t.Helper()
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

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Routes with mutual TLS: two servers with certificates of one CA form a
// cluster and carry messages; a server whose certificate another CA
// signed is never routed to.
func TestRoutesWithMutualTLS(t *testing.T) {
	dir := t.TempDir()
	good, err := node.WriteDevCerts(filepath.Join(dir, "good"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := node.WriteDevCerts(filepath.Join(dir, "other"), nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	start := func(i int, c node.DevCerts) *bus.Bus {
		_, p, _ := net.SplitHostPort(addrs[i])
		var port int
		fmt.Sscan(p, &port)
		b, err := bus.New(bus.Config{
			Name: fmt.Sprintf("s%d", i), Port: bus.RandomPort,
			Cluster: bus.Cluster{Name: "tls", Port: port, Routes: addrs, TLS: routeTLS(t, c)},
			Logger:  slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	b0, b1, b2 := start(0, good), start(1, good), start(2, other)

	deadline := time.Now().Add(10 * time.Second)
	for len(b0.State().Routes) != 1 || len(b1.State().Routes) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("routes: s0 %v, s1 %v, want one each (s0<->s1)", b0.State().Routes, b1.State().Routes)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sub, err := b1.Conn().SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := b1.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		if err := b0.Conn().Publish("hello", []byte("over TLS")); err != nil {
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			if string(m.Data) != "over TLS" {
				t.Fatalf("got %q", m.Data)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no message across the TLS route")
		}
	}
	// The stranger's route handshakes fail: give them time to be tried
	// (a negative check can only wait), then none may have formed.
	time.Sleep(500 * time.Millisecond)
	for i, b := range []*bus.Bus{b0, b1} {
		for _, r := range b.State().Routes {
			if r.Server != fmt.Sprintf("s%d", 1-i) {
				t.Fatalf("s%d has a route to %s: a certificate of another CA was accepted", i, r.Server)
			}
		}
	}
	if n := len(b2.State().Routes); n != 0 {
		t.Fatalf("s2 (another CA) has %d routes", n)
	}
}
