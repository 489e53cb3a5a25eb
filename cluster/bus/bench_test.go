package bus

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// BenchmarkRequestAcrossRoute measures a request-reply whose requester is
// connected to one server and whose responder to another, so that both
// legs cross the route: between two of our buses (clustered, JetStream
// on, as two Troupe nodes run them) and, in the same run, between two bare
// nats-server instances with nothing but a cluster block (the ceiling),
// and two bare instances with JetStream clustered too.
//
//	go test -run '^$' -bench RequestAcrossRoute -benchtime 20000x -count 3 ./cluster/bus/
func BenchmarkRequestAcrossRoute(b *testing.B) {
	b.Run("troupe", func(b *testing.B) {
		buses, addrs := startBenchBuses(b)
		for _, bs := range buses {
			if err := bs.SetRoutes(addrs); err != nil {
				b.Fatal(err)
			}
		}
		benchRequests(b, buses[0].ClientURL(), buses[1].ClientURL(), func() bool {
			return len(buses[0].State().Routes) == 1 && len(buses[1].State().Routes) == 1
		})
	})
	b.Run("bare", func(b *testing.B) {
		s1, s2 := startBare(b, false)
		benchRequests(b, s1.ClientURL(), s2.ClientURL(), func() bool {
			return s1.NumRoutes() > 0 && s2.NumRoutes() > 0
		})
	})
	// The same with JetStream clustered, to tell what JetStream costs a
	// route from what our configuration does.
	b.Run("bare-jetstream", func(b *testing.B) {
		s1, s2 := startBare(b, true)
		benchRequests(b, s1.ClientURL(), s2.ClientURL(), func() bool {
			return s1.NumRoutes() > 0 && s2.NumRoutes() > 0
		})
	})
}

func startBenchBuses(b *testing.B) ([]*Bus, []string) {
	var (
		buses []*Bus
		addrs []string
	)
	for i := range 2 {
		port := freePort(b)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		bs, err := New(Config{
			Name: fmt.Sprintf("s%d", i+1), Port: RandomPort, StoreDir: b.TempDir(),
			Cluster: Cluster{Name: "bench", Port: port, Routes: []string{addr}, User: "route", Password: "secret"},
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := bs.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { bs.Close() })
		buses, addrs = append(buses, bs), append(addrs, addr)
	}
	return buses, addrs
}

func startBare(b *testing.B, js bool) (*server.Server, *server.Server) {
	p1, p2 := freePort(b), freePort(b)
	mk := func(name string, port, peer int) *server.Server {
		u, _ := url.Parse(fmt.Sprintf("nats-route://127.0.0.1:%d", peer))
		opts := &server.Options{
			ServerName: name, Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "bare", Host: "127.0.0.1", Port: port},
			Routes:  []*url.URL{u},
		}
		if js {
			opts.JetStream, opts.StoreDir = true, b.TempDir()
		}
		s, err := server.NewServer(opts)
		if err != nil {
			b.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			b.Fatal("bare server not ready")
		}
		b.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		return s
	}
	return mk("b1", p1, p2), mk("b2", p2, p1)
}

// benchRequests runs b.N sequential requests from a client of one server to
// a responder on the other, and reports latency percentiles.
func benchRequests(b *testing.B, reqURL, respURL string, routed func() bool) {
	deadline := time.Now().Add(20 * time.Second)
	for !routed() {
		if time.Now().After(deadline) {
			b.Fatal("no route between the servers")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := nats.Connect(respURL)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Close()
	if _, err := resp.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	if err := resp.Flush(); err != nil {
		b.Fatal(err)
	}
	req, err := nats.Connect(reqURL)
	if err != nil {
		b.Fatal(err)
	}
	defer req.Close()
	payload := make([]byte, 200)
	// The subscription's interest reaches the other server asynchronously.
	for {
		if _, err := req.Request("bench.echo", payload, time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the responder's interest never crossed the route")
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := req.Request("bench.echo", payload, 5*time.Second); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
