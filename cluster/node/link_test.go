package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/link"
)

// The forward link with the TLS configs a node builds from --tls-cert,
// --tls-key and --tls-ca (the routes' mutual TLS): two nodes with
// certificates of one CA talk; a node whose certificate another CA signed
// is refused, and its request counts as not sent (so it goes over NATS).
func TestForwardLinkWithTheNodesTLS(t *testing.T) {
	dir := t.TempDir()
	load := func(name string) *tlsFiles {
		c, err := WriteDevCerts(filepath.Join(dir, name), nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		f, err := loadTLS(Config{TLSCertFile: c.Cert, TLSKeyFile: c.Key, TLSCAFile: c.CA})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	good, other := load("good"), load("other")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := link.Serve(ln, link.ServerConfig{Secret: "s", TLS: good.routes(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Handler: func(_ context.Context, req []byte) []byte { return append([]byte("ok:"), req...) }})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	peer := link.NewClient(link.ClientConfig{Secret: "s", TLS: good.routes()})
	defer peer.Close()
	if got, err := peer.Call(ctx, ln.Addr().String(), []byte("x")); err != nil || string(got) != "ok:x" {
		t.Fatalf("a node of the same CA: %q, %v", got, err)
	}
	stranger := link.NewClient(link.ClientConfig{Secret: "s", TLS: other.routes()})
	defer stranger.Close()
	if _, err := stranger.Call(ctx, ln.Addr().String(), []byte("x")); !errors.Is(err, link.ErrNotSent) {
		t.Fatalf("a node of another CA: err = %v, want ErrNotSent", err)
	}
}
