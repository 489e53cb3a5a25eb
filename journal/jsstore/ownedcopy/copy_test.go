package ownedcopy_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore/ownedcopy"
)

// recovery reads a stream as an entity recovers: its snapshot, then the
// events after it.
func recovery(t testing.TB, st journal.Store, stream string) (journal.Snapshot, []journal.Event) {
	t.Helper()
	ctx := context.Background()
	snap, err := st.LoadSnapshot(ctx, stream)
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("load snapshot of %s: %v", stream, err)
	}
	return snap, journaltest.Collect(t, st.Read(ctx, stream, snap.Sequence+1, 0))
}

// same checks that the local copy's events are the log's, every field
// equal, times included (the log keeps the time the Store stamped).
func same(t *testing.T, got, want []journal.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if !g.Time.Equal(w.Time) {
			t.Fatalf("event %d: time %v, the log's %v", i, g.Time, w.Time)
		}
		g.Time, w.Time = time.Time{}, time.Time{}
		if len(g.Payload) == 0 {
			g.Payload = nil
		}
		if len(w.Payload) == 0 {
			w.Payload = nil
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("event %d differs:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func appendN(t testing.TB, st journal.Store, stream string, from, n int) {
	t.Helper()
	for i := range n {
		ev := journal.Event{Type: "Deposited", Payload: fmt.Appendf(nil, `{"n":%d}`, from+i), Tags: []string{"t"}, Metadata: map[string]string{"k": "v"}}
		journaltest.MustAppend(t, st, stream, uint64(from+i), ev)
	}
}

// A recovery from a complete local copy sends nothing to JetStream and
// reads the same snapshot and events as the log holds.
func TestRecoveryIsLocal(t *testing.T) {
	c := bustest.Start(t, 1)
	nc := c.Connect(0)
	st := open(t, nc, opts{prefix: "loc", partitions: 2, replicas: 1, dir: t.TempDir(), acquire: true})
	ctx := context.Background()
	const stream = "account/1"
	appendN(t, st, stream, 0, 30)
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: stream, Sequence: 20, Data: []byte(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	appendN(t, st, stream, 30, 5)

	// The first recovery catches up (the stream was never read here).
	before := st.Counts()
	recovery(t, st, stream)
	if got := st.Counts(); got.CatchUps != before.CatchUps+1 || !ownedcopy.Marked(st, stream) {
		t.Fatalf("first recovery: counts %+v (before %+v), marked %v", got, before, ownedcopy.Marked(st, stream))
	}
	// An append through the Store keeps the mark; the next recovery is
	// local: no message to the server at all.
	appendN(t, st, stream, 35, 3)
	out := nc.Stats().OutMsgs
	before = st.Counts()
	snap, evs := recovery(t, st, stream)
	if sent := nc.Stats().OutMsgs - out; sent != 0 {
		t.Fatalf("a local recovery sent %d messages", sent)
	}
	if got := st.Counts(); got.Local != before.Local+2 || got.CatchUps != before.CatchUps {
		t.Fatalf("local recovery: counts %+v (before %+v)", got, before)
	}
	// The same as the log's.
	wantSnap, err := st.Inner().LoadSnapshot(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Sequence != 20 || snap.Sequence != wantSnap.Sequence || string(snap.Data) != string(wantSnap.Data) || snap.Stream != stream {
		t.Fatalf("snapshot %+v, the log's %+v", snap, wantSnap)
	}
	same(t, evs, journaltest.Collect(t, st.Inner().Read(ctx, stream, 21, 0)))
	if len(evs) != 18 {
		t.Fatalf("%d events after the snapshot", len(evs))
	}
	// Reads from and with a limit, locally.
	out = nc.Stats().OutMsgs
	same(t, journaltest.Collect(t, st.Read(ctx, stream, 5, 3)), journaltest.Collect(t, st.Inner().Read(ctx, stream, 5, 3)))
	same(t, journaltest.Collect(t, st.Read(ctx, stream, 0, 0)), journaltest.Collect(t, st.Inner().Read(ctx, stream, 0, 0)))
	if n := len(journaltest.Collect(t, st.Read(ctx, stream, 39, 0))); n != 0 {
		t.Fatalf("read past the head: %d events", n)
	}
	_ = out

	// A partition not owned passes through.
	other := "account/2"
	for st.PartitionOf(other) == st.PartitionOf(stream) {
		other += "x"
	}
	appendN(t, st, other, 0, 2)
	st.Release(st.PartitionOf(other))
	before = st.Counts()
	if n := len(journaltest.Collect(t, st.Read(ctx, other, 0, 0))); n != 2 {
		t.Fatalf("read of a released partition: %d events", n)
	}
	if got := st.Counts(); got.Passed != before.Passed+1 || got.Local != before.Local {
		t.Fatalf("released partition: counts %+v (before %+v)", got, before)
	}
}

// Takeover: A owns and appends; B acquires with a higher epoch and
// appends more; A's append is fenced and marks nothing; A re-acquires and
// reads B's events (a catch-up from the log), never a stale prefix.
func TestTakeover(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx := context.Background()
	a := open(t, c.Connect(0), opts{prefix: "tko", partitions: 1, replicas: 3, dir: t.TempDir()})
	b := open(t, c.Connect(1), opts{prefix: "tko", partitions: 1, replicas: 3, dir: t.TempDir()})
	const stream, other = "account/7", "account/8"
	if _, err := a.Acquire(ctx, 0, 1, "a"); err != nil {
		t.Fatal(err)
	}
	appendN(t, a, stream, 0, 10)
	appendN(t, a, other, 0, 1)
	recovery(t, a, stream) // catch up and mark
	recovery(t, a, other)
	if !ownedcopy.Marked(a, stream) || !ownedcopy.Marked(a, other) {
		t.Fatal("A's streams are not marked after a catch-up")
	}

	if _, err := b.Acquire(ctx, 0, 2, "b"); err != nil {
		t.Fatal(err)
	}
	appendN(t, b, stream, 10, 5)
	_, evs := recovery(t, b, stream)
	if len(evs) != 15 {
		t.Fatalf("B reads %d events", len(evs))
	}

	// A's next append (to another stream of the partition) is fenced:
	// nothing written, nothing marked. A's copy of the stream B wrote
	// still says "complete under A's old fence": only the fence check
	// keeps it from answering from now on.
	_, err := a.Append(ctx, journal.AppendRequest{Stream: other, Expected: 1, Events: []journal.Event{journaltest.Ev("Deposited", "")}})
	if !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("A's append after B's takeover: %v", err)
	}
	if ownedcopy.Marked(a, other) || ownedcopy.Marked(a, stream) {
		t.Fatal("marked after a fenced append")
	}
	if h, _ := ownedcopy.LocalHead(a, other); h != 1 {
		t.Fatalf("A's local head %d after a fenced append", h)
	}
	// Not owned: A's reads pass to the log and see B's events.
	if _, evs := recovery(t, a, stream); len(evs) != 15 {
		t.Fatalf("A (fenced) reads %d events", len(evs))
	}

	// B hands over; A takes the partition back and catches up.
	appendN(t, b, stream, 15, 2)
	b.Release(0)
	if _, err := a.Acquire(ctx, 0, 3, "a"); err != nil {
		t.Fatal(err)
	}
	before := a.Counts()
	_, evs = recovery(t, a, stream)
	if got := a.Counts(); got.CatchUps != before.CatchUps+1 {
		t.Fatalf("A's first read after re-acquiring: %+v (before %+v), want a catch-up", got, before)
	}
	same(t, evs, journaltest.Collect(t, b.Read(ctx, stream, 0, 0)))
	if len(evs) != 17 {
		t.Fatalf("A reads %d events after re-acquiring, want 17", len(evs))
	}
	// Read-your-writes across the handover: A appends on top, and reads
	// it all locally.
	appendN(t, a, stream, 17, 1)
	before = a.Counts()
	if _, evs = recovery(t, a, stream); len(evs) != 18 || a.Counts().Local != before.Local+2 {
		t.Fatalf("A reads %d events, counts %+v (before %+v)", len(evs), a.Counts(), before)
	}
	same(t, evs, journaltest.Collect(t, a.Inner().Read(ctx, stream, 0, 0)))
}

// A local copy that cannot be written or read (its database closed under
// it) never gives a wrong answer: reads go to the log.
func TestLocalFailureFallsBack(t *testing.T) {
	c := bustest.Start(t, 1)
	st := open(t, c.Connect(0), opts{prefix: "bad", partitions: 1, replicas: 1, dir: t.TempDir(), acquire: true})
	ctx := context.Background()
	const stream = "account/9"
	appendN(t, st, stream, 0, 5)
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: stream, Sequence: 3, Data: []byte("three")}); err != nil {
		t.Fatal(err)
	}
	recovery(t, st, stream)
	if !ownedcopy.Marked(st, stream) {
		t.Fatal("not marked")
	}
	if err := ownedcopy.CloseDB(st); err != nil {
		t.Fatal(err)
	}
	// The append lands in the log; its local write fails and drops the mark.
	appendN(t, st, stream, 5, 2)
	if err := st.SaveSnapshot(ctx, journal.Snapshot{Stream: stream, Sequence: 6, Data: []byte("six")}); err != nil {
		t.Fatal(err)
	}
	if ownedcopy.Marked(st, stream) {
		t.Fatal("still marked after a failed local write")
	}
	snap, evs := recovery(t, st, stream)
	if snap.Sequence != 6 || string(snap.Data) != "six" || len(evs) != 1 || evs[0].Sequence != 7 {
		t.Fatalf("after a local failure: snapshot %+v, events %+v", snap, evs)
	}
	same(t, journaltest.Collect(t, st.Read(ctx, stream, 0, 0)), journaltest.Collect(t, st.Inner().Read(ctx, stream, 0, 0)))
	if st.Counts().LocalErrors == 0 {
		t.Fatal("no local error counted")
	}
}

// Writes of one stream at once (not an entity's way, but allowed) leave
// the copy a prefix of the log, and reads right after them see every
// acknowledged event.
func TestConcurrentWritesAndReads(t *testing.T) {
	c := bustest.Start(t, 1)
	st := open(t, c.Connect(0), opts{prefix: "cc", partitions: 2, replicas: 1, dir: t.TempDir(), acquire: true})
	ctx := context.Background()
	streams := []string{"a/1", "a/2", "a/3"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]uint64{}
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := streams[w%len(streams)]
			for i := range 20 {
				r, err := st.Append(ctx, journal.AppendRequest{Stream: stream, Expected: journal.ExpectAny, Events: []journal.Event{journaltest.Ev("E", fmt.Sprint(w, i))}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[stream] = max(acked[stream], r.LastSequence)
				mu.Unlock()
				// Read-your-writes: every acknowledged event is seen.
				evs := journaltest.Collect(t, st.Read(ctx, stream, 0, 0))
				if uint64(len(evs)) < r.LastSequence {
					t.Errorf("%s: read %d events after the ack of %d", stream, len(evs), r.LastSequence)
					return
				}
				for j, ev := range evs {
					if ev.Sequence != uint64(j+1) {
						t.Errorf("%s: event %d has sequence %d", stream, j, ev.Sequence)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, stream := range streams {
		same(t, journaltest.Collect(t, st.Read(ctx, stream, 0, 0)), journaltest.Collect(t, st.Inner().Read(ctx, stream, 0, 0)))
		if h, err := ownedcopy.LocalHead(st, stream); err != nil || h != acked[stream] {
			t.Fatalf("%s: local head %d (%v), acked %d", stream, h, err, acked[stream])
		}
	}
}

// A partition released for DropAfter loses its local data in the
// background; taken back, its streams catch up from the first event.
// A restart keeps the local data of partitions owned again soon.
func TestDropAndRestart(t *testing.T) {
	c := bustest.Start(t, 1)
	nc := c.Connect(0)
	dir := t.TempDir()
	o := opts{prefix: "drop", partitions: 1, replicas: 1, dir: dir, acquire: true, dropAfter: 50 * time.Millisecond}
	st := open(t, nc, o)
	ctx := context.Background()
	const stream = "account/3"
	appendN(t, st, stream, 0, 4)
	if h, _ := ownedcopy.LocalHead(st, stream); h != 4 {
		t.Fatalf("local head %d", h)
	}
	// Owned: never dropped.
	if st.Drop(0) {
		t.Fatal("an owned partition was dropped")
	}
	if h, _ := ownedcopy.LocalHead(st, stream); h != 4 {
		t.Fatalf("owned partition dropped: head %d", h)
	}
	st.Release(0)
	deadline := time.Now().Add(10 * time.Second)
	for h, _ := ownedcopy.LocalHead(st, stream); h != 0; h, _ = ownedcopy.LocalHead(st, stream) {
		if time.Now().After(deadline) {
			t.Fatal("released partition not dropped within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := st.Acquire(ctx, 0, 2, "suite"); err != nil {
		t.Fatal(err)
	}
	if _, evs := recovery(t, st, stream); len(evs) != 4 {
		t.Fatalf("%d events after a drop", len(evs))
	}
	if h, _ := ownedcopy.LocalHead(st, stream); h != 4 {
		t.Fatalf("local head %d after catching up", h)
	}
	// Restart: the copy is kept; the first read catches up the suffix.
	st.Close()
	o.acquire, o.dropAfter = false, -1
	st = open(t, nc, o)
	if h, _ := ownedcopy.LocalHead(st, stream); h != 4 {
		t.Fatalf("local head %d after a restart", h)
	}
	if _, err := st.Acquire(ctx, 0, 3, "suite"); err != nil {
		t.Fatal(err)
	}
	appendN(t, st, stream, 4, 1)
	_, evs := recovery(t, st, stream)
	same(t, evs, journaltest.Collect(t, st.Inner().Read(ctx, stream, 0, 0)))
	if !ownedcopy.Marked(st, stream) || len(evs) != 5 {
		t.Fatalf("after a restart: %d events, marked %v", len(evs), ownedcopy.Marked(st, stream))
	}
	if _, err := ownedcopy.Open(ownedcopy.Config{Dir: filepath.Join(dir, "x")}); err == nil {
		t.Fatal("Open without a Store")
	}
}

// An append that lands while a catch-up is between its read of the log
// and its local writes keeps the stream unmarked: the catch-up's copy
// lacks the append's events, and the next read must catch up again.
func TestAppendDuringCatchUp(t *testing.T) {
	c := bustest.Start(t, 1)
	st := open(t, c.Connect(0), opts{prefix: "race", partitions: 1, replicas: 1, dir: t.TempDir(), acquire: true, dropAfter: -1})
	ctx := context.Background()
	const stream = "account/5"
	appendN(t, st, stream, 0, 5)
	// Empty the local copy: a partition dropped while not owned.
	st.Release(0)
	if !st.Drop(0) {
		t.Fatal("drop refused")
	}
	if _, err := st.Acquire(ctx, 0, 2, "suite"); err != nil {
		t.Fatal(err)
	}
	once := sync.Once{}
	ownedcopy.SetAfterCatchUpRead(st, func(string) {
		once.Do(func() { appendN(t, st, stream, 5, 1) }) // lands in the log, not locally (a hole)
	})
	if evs := journaltest.Collect(t, st.Read(ctx, stream, 0, 0)); len(evs) < 5 {
		t.Fatalf("the racing read got %d events", len(evs))
	}
	if ownedcopy.Marked(st, stream) {
		t.Fatal("marked complete although an append landed during the catch-up")
	}
	_, evs := recovery(t, st, stream)
	same(t, evs, journaltest.Collect(t, st.Inner().Read(ctx, stream, 0, 0)))
	if len(evs) != 6 {
		t.Fatalf("%d events after the race, want 6", len(evs))
	}
}

// A copy kept for a stream that was deleted and created again (a wiped
// cluster, a node's directory kept) is not that stream's: it is dropped
// on open, and reads see only the new stream's events.
func TestRecreatedStreamDropsCopy(t *testing.T) {
	c := bustest.Start(t, 1)
	nc := c.Connect(0)
	dir := t.TempDir()
	o := opts{prefix: "idn", partitions: 1, replicas: 1, dir: dir, acquire: true, dropAfter: -1}
	st := open(t, nc, o)
	const stream = "account/4"
	appendN(t, st, stream, 0, 3)
	st.Close()
	ctx := context.Background()
	if err := c.JetStream(0).DeleteStream(ctx, "IDN_P0"); err != nil {
		t.Fatal(err)
	}
	st = open(t, nc, o)
	if h, err := ownedcopy.LocalHead(st, stream); err != nil || h != 0 {
		t.Fatalf("local head %d (%v) for a recreated stream", h, err)
	}
	journaltest.MustAppend(t, st, stream, 0, journaltest.Ev("Opened", "new"))
	_, evs := recovery(t, st, stream)
	if len(evs) != 1 || string(evs[0].Payload) != "new" {
		t.Fatalf("recreated stream reads %+v", evs)
	}
}
