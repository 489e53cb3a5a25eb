package ownedcopy_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore/ownedcopy"
)

// A busy stream's appends gather while the writer lingers and are written
// in chunks (one key for up to 64 events); a read does not wait for the
// linger, is answered locally, and every read across chunk boundaries
// (from and limit anywhere) equals the log's; after a restart the copy
// still holds them all.
func TestChunks(t *testing.T) {
	c := bustest.Start(t, 1)
	nc := c.Connect(0)
	dir := t.TempDir()
	o := opts{prefix: "chk", partitions: 1, replicas: 1, dir: dir, acquire: true, linger: time.Hour}
	st := open(t, nc, o)
	ctx := context.Background()
	const stream, n = "account/1", 150
	appendN(t, st, stream, 0, n)

	// The first read catches up (nothing of it is marked yet); with an
	// hour's linger, it returns only because the read hurries the writer.
	done := make(chan error, 1)
	go func() {
		var err error
		for _, e := range st.Read(ctx, stream, 0, 0) {
			err = cmp.Or(err, e)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a read waited for the writer's linger")
	}
	keys, err := ownedcopy.EventKeys(st, stream)
	if err != nil {
		t.Fatal(err)
	}
	if keys != 3 { // 64 + 64 + 22
		t.Fatalf("%d events in %d keys, want 3 chunks", n, keys)
	}
	if !ownedcopy.Marked(st, stream) {
		t.Fatal("not marked after the catch-up")
	}
	before := st.Counts()
	reads := 0
	for _, from := range []uint64{0, 1, 2, 63, 64, 65, 100, 128, 129, 150, 151} {
		for _, limit := range []int{0, 1, 3, 64, 65, 200} {
			got := journaltest.Collect(t, st.Read(ctx, stream, from, limit))
			same(t, got, journaltest.Collect(t, st.Inner().Read(ctx, stream, from, limit)))
			reads++
		}
	}
	if got := st.Counts(); got.Local != before.Local+uint64(reads) || got.CatchUps != before.CatchUps {
		t.Fatalf("reads of a complete copy: counts %+v (before %+v), want %d more local", got, before, reads)
	}

	// Appends after the mark keep it, their chunk continues the stream
	// (a read of the new events hurries the writer again), and a restart
	// keeps everything: the next recovery reads nothing from the log.
	appendN(t, st, stream, n, 5)
	same(t, journaltest.Collect(t, st.Read(ctx, stream, n-1, 0)), journaltest.Collect(t, st.Inner().Read(ctx, stream, n-1, 0)))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open(t, nc, o)
	if head, err := ownedcopy.LocalHead(st, stream); err != nil || head != n+5 {
		t.Fatalf("local head after a restart: %d, %v; want %d", head, err, n+5)
	}
	_, evs := recovery(t, st, stream)
	same(t, evs, journaltest.Collect(t, st.Inner().Read(ctx, stream, 0, 0)))
}

// A group too big for one Badger transaction is committed in several,
// and every stream's events are there, in order.
func TestChunksSpanTransactions(t *testing.T) {
	c := bustest.Start(t, 1)
	nc := c.Connect(0)
	st := open(t, nc, opts{prefix: "big", partitions: 2, replicas: 1, dir: t.TempDir(), acquire: true, linger: time.Hour})
	ctx := context.Background()
	const streams, each = 10, 300 // 3,000 events of 1 KiB: over the 2.4 MiB a transaction takes, under what the writer queues
	payload := bytes.Repeat([]byte("x"), 1024)
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			stream := fmt.Sprintf("account/%d", i)
			for n := range each {
				_, err := st.Append(ctx, journal.AppendRequest{Stream: stream, Expected: uint64(n), Events: []journal.Event{{Type: "Big", Payload: payload}}})
				if err != nil {
					errs <- err
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
	before := ownedcopy.Commits(st)
	for i := range streams {
		stream := fmt.Sprintf("account/%d", i)
		_, evs := recovery(t, st, stream)
		same(t, evs, journaltest.Collect(t, st.Inner().Read(ctx, stream, 0, 0)))
		if head, err := ownedcopy.LocalHead(st, stream); err != nil || head != each {
			t.Fatalf("%s: local head %d, %v; want %d", stream, head, err, each)
		}
	}
	if n := ownedcopy.Commits(st) - before; n < 2 {
		t.Fatalf("3 MiB written in %d transaction(s)", n)
	}
}
