package ownedcopy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
)

// BenchmarkRecover measures an entity's recovery (LoadSnapshot, then Read
// of the events after it) of a stream of 1,000 events of 200 bytes, with
// no snapshot and with one at 900, on three servers with three replicas:
// from the complete local copy, and from JetStream (the inner store, as
// before the local copy).
//
//	go test -run '^$' -bench Recover -benchtime 2s ./journal/jsstore/ownedcopy/
func BenchmarkRecover(b *testing.B) {
	c := bustest.Start(b, 3)
	st := open(b, c.Connect(0), opts{prefix: "bench", partitions: 1, replicas: 3, dir: b.TempDir(), acquire: true})
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 200)
	for _, stream := range []string{"account/plain", "account/snap"} {
		for i := range 10 {
			evs := make([]journal.Event, 100)
			for j := range evs {
				evs[j] = journal.Event{Type: "Deposited", Payload: payload}
			}
			if _, err := st.Append(ctx, journal.AppendRequest{Stream: stream, Expected: uint64(i * 100), Events: evs}); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: "account/snap", Sequence: 900, Data: bytes.Repeat([]byte("s"), 1024)}); err != nil {
		b.Fatal(err)
	}
	recover := func(b *testing.B, s journal.Store, stream string, want int) {
		snap, err := s.LoadSnapshot(ctx, stream)
		if err != nil && !errors.Is(err, journal.ErrNotFound) {
			b.Fatal(err)
		}
		n := 0
		for _, err := range s.Read(ctx, stream, snap.Sequence+1, 0) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != want {
			b.Fatalf("%d events, want %d", n, want)
		}
	}
	for _, tc := range []struct {
		stream string
		want   int
	}{{"account/plain", 1000}, {"account/snap", 100}} {
		for _, from := range []string{"local", "jetstream"} {
			name := fmt.Sprintf("stream=%s/from=%s", tc.stream[len("account/"):], from)
			b.Run(name, func(b *testing.B) {
				var s journal.Store = st
				if from == "jetstream" {
					s = st.Inner()
				} else {
					recover(b, st, tc.stream, tc.want) // catch up once: the copy is complete from here on
				}
				before := st.Counts()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					recover(b, s, tc.stream, tc.want)
				}
				b.StopTimer()
				if from == "local" && st.Counts().CatchUps != before.CatchUps {
					b.Fatalf("a local recovery caught up: %+v (before %+v)", st.Counts(), before)
				}
				b.ReportMetric(float64(tc.want), "events/op")
			})
		}
	}
}

// BenchmarkAppend measures what the local copy adds to appends: 64
// entities appending one 200-byte event at a time each, through the Store
// (log, then the local copy) and straight to the log, on three servers
// with three replicas.
//
//	go test -run '^$' -bench Append -benchtime 3000x ./journal/jsstore/ownedcopy/
func BenchmarkAppend(b *testing.B) {
	c := bustest.Start(b, 3)
	st := open(b, c.Connect(0), opts{prefix: "bapp", partitions: 1, replicas: 3, dir: b.TempDir(), acquire: true})
	payload := bytes.Repeat([]byte("x"), 200)
	var (
		mu   sync.Mutex
		next int // streams are new in every run of the function
	)
	for _, to := range []string{"copy", "log"} {
		b.Run("to="+to, func(b *testing.B) {
			var s journal.Store = st
			if to == "log" {
				s = st.Inner()
			}
			b.ReportAllocs()
			b.SetParallelism(32) // 64 writers on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				mu.Lock()
				id := next
				next++
				mu.Unlock()
				stream := fmt.Sprintf("account/%s-%d", to, id)
				var head uint64
				for pb.Next() {
					r, err := s.Append(context.Background(), journal.AppendRequest{Stream: stream, Expected: head,
						Events: []journal.Event{{Type: "Deposited", Payload: payload}}})
					if err != nil {
						b.Error(err)
						return
					}
					head = r.LastSequence
				}
			})
		})
	}
}
