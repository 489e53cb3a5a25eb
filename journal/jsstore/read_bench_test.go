package jsstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/jsstore"
)

// BenchmarkReads compares the store's reads one message per request from
// the stream's leader (OneByOne, the store before batched reads) with
// batched direct gets (Batched), in the same run, on three in-process
// servers with an R3 stream (docs/benchmarks.md, "Batched reads").
//
//	go test -run '^$' -bench Reads -benchtime 3x ./journal/jsstore/
//
// One partition holds 10,000 events of 200 bytes: 9,000 of 100 entities
// and 1,000 of one entity (big/1), interleaved, written through server 0.
// The reader is a second store on server 1. ReadAll: an op reads the
// whole partition (a projection rebuilding); Read: an op reads big/1's
// 1,000 events (an entity's recovery).
func BenchmarkReads(b *testing.B) {
	c := bustest.Start(b, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cfg := jsstore.Config{Prefix: "rb", Partitions: 1, Replicas: 3}
	w := openStore(b, c.Connect(0), cfg)
	payload := make([]byte, 200)
	last := map[string]uint64{}
	for round := range 100 {
		// 90 events of 90 entities, then 10 of big/1.
		for _, a := range []struct {
			stream string
			n      int
		}{{fmt.Sprint("small/", round), 90}, {"big/1", 10}} {
			evs := make([]journal.Event, a.n)
			for i := range evs {
				evs[i] = journal.Event{Type: "Deposited", Payload: payload, Tags: []string{"t"}}
			}
			r, err := w.Append(ctx, journal.AppendRequest{Stream: a.stream, Expected: last[a.stream], Events: evs})
			if err != nil {
				b.Fatal(err)
			}
			last[a.stream] = r.LastSequence
		}
	}
	r := openStore(b, c.Connect(1), cfg)
	if _, err := r.WaitPosition(ctx, 0, w.LastPosition(0)-1); err != nil {
		b.Fatal(err)
	}
	if info, err := c.JetStream(1).Stream(ctx, "RB_P0"); err == nil && info.CachedInfo().Cluster != nil {
		b.Logf("stream leader %s, reader on %s", info.CachedInfo().Cluster.Leader, c.Name(1))
	}
	for _, read := range []struct {
		name   string
		events int
		seq    func() func(func(journal.Event, error) bool)
	}{
		{"ReadAll", 10000, func() func(func(journal.Event, error) bool) { return r.ReadAll(ctx, 0, 0, journal.Filter{}, 0) }},
		{"Read", 1000, func() func(func(journal.Event, error) bool) { return r.Read(ctx, "big/1", 0, 0) }},
	} {
		for _, mode := range []struct {
			name   string
			leader bool
		}{{"OneByOne", true}, {"Batched", false}} {
			b.Run(read.name+"/"+mode.name, func(b *testing.B) {
				jsstore.SetLeaderReads(r, mode.leader)
				defer jsstore.SetLeaderReads(r, false)
				b.ReportAllocs()
				d0, l0 := jsstore.ReadCounts(r)
				for b.Loop() {
					n := 0
					for _, err := range read.seq() {
						if err != nil {
							b.Fatal(err)
						}
						n++
					}
					if n != read.events {
						b.Fatalf("%d events, want %d", n, read.events)
					}
				}
				d1, l1 := jsstore.ReadCounts(r)
				b.ReportMetric(float64(b.N*read.events)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/read")
				b.ReportMetric(float64(d1-d0+l1-l0)/float64(b.N), "requests/read")
			})
		}
	}
}
