package bus

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// freePort returns a TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startClustered starts n clustered buses, each routed only to itself, as
// a Troupe node starts before membership tells it about the others.
func startClustered(t *testing.T, n int, password func(i int) string) ([]*Bus, []string, []*syncBuf) {
	t.Helper()
	var (
		buses []*Bus
		addrs []string
		logs  []*syncBuf
	)
	for i := range n {
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		lb := &syncBuf{}
		b, err := New(Config{
			Name: fmt.Sprintf("s%d", i+1), Port: RandomPort, StoreDir: t.TempDir(),
			Cluster: Cluster{Name: "test", Port: port, Routes: []string{addr}, User: "route", Password: password(i)},
			Logger:  slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = b.Start(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		if got := b.RouteAddr(); got != addr {
			t.Fatalf("RouteAddr = %q, want %q", got, addr)
		}
		buses, addrs, logs = append(buses, b), append(addrs, addr), append(logs, lb)
	}
	return buses, addrs, logs
}

func eventually(t *testing.T, bound time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, bound, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRoutesSetAtRunTimeFormAJetStreamCluster(t *testing.T) {
	buses, addrs, _ := startClustered(t, 3, func(int) string { return "secret" })
	for _, b := range buses {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := b.JetStreamReady(ctx)
		cancel()
		if err == nil {
			t.Fatal("a lone clustered server answers JetStream requests: it cannot have a quorum")
		}
	}
	for _, b := range buses {
		if err := b.SetRoutes(addrs); err != nil {
			t.Fatal(err)
		}
		if err := b.SetRoutes(addrs); err != nil { // unchanged: no reload
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "full mesh with one meta leader", func() error {
		leaders := map[string]bool{}
		for _, b := range buses {
			st := b.State()
			if len(st.Routes) != 2 {
				return fmt.Errorf("%s routes %v", b.cfg.Name, st.Routes)
			}
			leaders[st.MetaLeader] = true
			if st.MetaLeader == "" || st.MetaSize != 3 {
				return fmt.Errorf("%s: meta leader %q of %d", b.cfg.Name, st.MetaLeader, st.MetaSize)
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("leaders %v", leaders)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := buses[2].WaitJetStream(ctx); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(buses[2].Conn())
	if err != nil {
		t.Fatal(err)
	}
	// Each try has its own deadline: a request whose answer is lost (the
	// meta leader changed under it) must not use up the whole bound.
	try := func(f func(context.Context) error) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return f(ctx)
		}
	}
	// Right after forming, the meta leader may not have heard from every
	// peer yet ("no suitable peers for placement"): retry, bounded. A
	// create repeated after a lost answer finds the same stream: no error.
	eventually(t, 30*time.Second, "an R3 stream over the three servers", try(func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
		return err
	}))
	// And a publish right after may find the new stream's leader not
	// elected yet ("no response from stream"): retry, bounded.
	eventually(t, 30*time.Second, "a publish to the R3 stream", try(func(ctx context.Context) error {
		_, err := js.Publish(ctx, "r3.x", []byte("replicated"))
		return err
	}))
}

func TestRoutesWithWrongCredentialsAreRefused(t *testing.T) {
	buses, addrs, logs := startClustered(t, 2, func(i int) string { return fmt.Sprintf("secret-%d", i) })
	for _, b := range buses {
		if err := b.SetRoutes(addrs); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the refusal is logged", func() error {
		for _, l := range logs {
			if strings.Contains(strings.ToLower(l.String()), "authorization") {
				return nil
			}
		}
		return fmt.Errorf("no authorization error logged")
	})
	// Nothing crosses: a message published on one server never reaches a
	// subscriber on the other (a route may show up for a moment while its
	// handshake is refused, so the test looks at delivery).
	sub, err := buses[1].Conn().SubscribeSync("x.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := buses[1].Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := buses[0].Conn().Publish("x.y", []byte("leak")); err != nil {
			t.Fatal(err)
		}
		if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			t.Fatalf("a message crossed a route with the wrong password: %q", m.Data)
		}
	}
}

func TestClusterConfigIsValidated(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Cluster
		want string
	}{
		{"port", Cluster{Name: "c", Port: 70000}, "cluster port"},
		{"user without password", Cluster{Name: "c", Port: 6222, User: "u"}, "user and password"},
		{"bad route", Cluster{Name: "c", Port: 6222, Routes: []string{"nohost"}}, `route address "nohost"`},
	} {
		if _, err := New(Config{Cluster: tc.c}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	b, err := New(Config{Port: RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.SetRoutes([]string{"127.0.0.1:1"}); err == nil {
		t.Fatal("SetRoutes on a lone server succeeded")
	}
}
