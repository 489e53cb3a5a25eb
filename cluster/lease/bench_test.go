package lease_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/cluster/lease"
)

// latencies records one duration per operation and reports p50 and p99.
type latencies []time.Duration

func (l latencies) report(b *testing.B, op string) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	p := func(q float64) float64 { return float64(l[int(q*float64(len(l)-1))].Microseconds()) }
	b.ReportMetric(p(0.50), op+"-p50-µs")
	b.ReportMetric(p(0.99), op+"-p99-µs")
}

// BenchmarkLease measures sequential acquire, renew and release on three
// servers with the bucket at R3, through a client of a server that does
// not lead the bucket (the common case), and a raw KV compare-and-set
// update in the same run as the ceiling.
func BenchmarkLease(b *testing.B) {
	c := bustest.Start(b, 3)
	cfg := lease.Config{Bucket: "bench", TTL: 15 * time.Second}
	openStore(b, c, 0, cfg)
	leader := bucketLeader(b, c, 0, "KV_bench")
	i := (leader + 1) % c.Size()
	js := c.JetStream(i)
	s := openStoreJS(b, js, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	b.Run("acquire-release", func(b *testing.B) {
		b.ReportAllocs()
		acq, rel := make(latencies, 0, b.N), make(latencies, 0, b.N)
		for n := range b.N {
			name := fmt.Sprintf("shard.%d", n%256)
			t0 := time.Now()
			l, err := s.Acquire(ctx, name, "a")
			t1 := time.Now()
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Release(ctx, l); err != nil {
				b.Fatal(err)
			}
			acq, rel = append(acq, t1.Sub(t0)), append(rel, time.Since(t1))
		}
		acq.report(b, "acquire")
		rel.report(b, "release")
	})
	b.Run("renew", func(b *testing.B) {
		b.ReportAllocs()
		l, err := s.Acquire(ctx, "renewed", "a")
		if err != nil {
			b.Fatal(err)
		}
		lat := make(latencies, 0, b.N)
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			if l, err = s.Renew(ctx, l); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		lat.report(b, "renew")
		if err := s.Release(ctx, l); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("raw-kv-update", func(b *testing.B) {
		b.ReportAllocs()
		kv, err := js.KeyValue(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		rev, err := kv.Put(ctx, "raw", []byte(`{"holder":"a","ttl_s":15}`))
		if err != nil {
			b.Fatal(err)
		}
		lat := make(latencies, 0, b.N)
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			if rev, err = kv.Update(ctx, "raw", []byte(`{"holder":"a","epoch":1,"ttl_s":15}`), rev); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		lat.report(b, "update")
	})
}

// bucketLeader is the index of the server leading stream, as server i
// sees it.
func bucketLeader(t testing.TB, c *bustest.Cluster, i int, stream string) int {
	t.Helper()
	var js jetstream.JetStream = c.JetStream(i)
	st, err := js.Stream(ctxT(t, 5*time.Second), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctxT(t, 5*time.Second))
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream info: %+v, %v", info, err)
	}
	for i := range c.Size() {
		if c.Name(i) == info.Cluster.Leader {
			return i
		}
	}
	t.Fatalf("no leader among the servers: %q", info.Cluster.Leader)
	return -1
}
