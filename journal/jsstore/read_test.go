package jsstore_test

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsread"
)

// openStore opens a store on nc, retrying while a fresh cluster settles
// ("no suitable peers"), and closes it at the test's end.
func openStore(t testing.TB, nc *nats.Conn, cfg jsstore.Config) *jsstore.Store {
	t.Helper()
	cfg.Conn = nc
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		st  *jsstore.Store
		err error
	)
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
		if st, err = jsstore.Open(ctx, cfg); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// sameEvents fails unless got and want hold the same events, field by
// field.
func sameEvents(t *testing.T, what string, got, want []journal.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Stream != w.Stream || g.Sequence != w.Sequence || g.Partition != w.Partition || g.Position != w.Position ||
			g.Type != w.Type || g.ContentType != w.ContentType || string(g.Payload) != string(w.Payload) ||
			!g.Time.Equal(w.Time) || !slices.Equal(g.Tags, w.Tags) || !maps.Equal(g.Metadata, w.Metadata) {
			t.Fatalf("%s: event %d:\n got %+v\nwant %+v", what, i, g, w)
		}
	}
}

func positions(evs []journal.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Position
	}
	return out
}

// fill appends n events to one partition's entities (kinds a and b),
// in appends of up to 100 events, with tags, metadata and a content type
// on some; it returns the last append's result.
func fill(t *testing.T, st *jsstore.Store, n, entities int) journal.AppendResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	last := map[string]uint64{}
	var res journal.AppendResult
	for done, round := 0, 0; done < n; round++ {
		kind := []string{"a", "b"}[round%2]
		stream := journal.StreamID(kind, fmt.Sprint(round%entities))
		k := min(1+round*7%100, n-done)
		evs := make([]journal.Event, k)
		for i := range evs {
			evs[i] = journal.Event{Type: "E", Payload: fmt.Appendf(nil, "%s #%d", stream, done+i)}
			if (done+i)%3 == 0 {
				evs[i].Tags = []string{"three", fmt.Sprint("t", (done+i)%5)}
				evs[i].Metadata = map[string]string{"k": "v"}
				evs[i].ContentType = "text/plain"
			}
		}
		var err error
		res, err = st.Append(ctx, journal.AppendRequest{Stream: stream, Expected: last[stream], Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		last[stream] = res.LastSequence
		done += k
	}
	return res
}

// A batched read of thousands of events, through another server than the
// writer's, equals the one-by-one read from the leader: ReadAll with every
// filter, from and limit, and Read of each entity. It asks for far fewer
// messages than it yields.
func TestBatchedReadsEqualOneByOne(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := jsstore.Config{Prefix: "eq", Partitions: 1, Replicas: 3, ReadBatch: 300}
	w := openStore(t, c.Connect(0), cfg)
	const events = 3000
	last := fill(t, w, events, 20)
	r := openStore(t, c.Connect(1), cfg)
	if _, err := r.WaitPosition(ctx, 0, last.LastPosition-1); err != nil {
		t.Fatal(err)
	}
	read := func(leader bool, seq func(*jsstore.Store) func(func(journal.Event, error) bool)) []journal.Event {
		jsstore.SetLeaderReads(r, leader)
		defer jsstore.SetLeaderReads(r, false)
		return journaltest.Collect(t, seq(r))
	}
	all := read(true, func(s *jsstore.Store) func(func(journal.Event, error) bool) {
		return s.ReadAll(ctx, 0, 0, journal.Filter{}, 0)
	})
	if len(all) != events {
		t.Fatalf("one by one: %d events, want %d", len(all), events)
	}
	for _, tt := range []struct {
		name  string
		from  uint64
		f     journal.Filter
		limit int
	}{
		{"everything", 0, journal.Filter{}, 0},
		{"from the middle", all[events/2].Position, journal.Filter{}, 0},
		{"a limit", all[100].Position, journal.Filter{}, 777},
		{"a kind", 0, journal.Filter{Kind: "b"}, 0},
		{"a kind from the last position", last.LastPosition, journal.Filter{Kind: "a"}, 0},
		{"a tag", 0, journal.Filter{Tag: "t3"}, 0},
		{"a tag, limited", 0, journal.Filter{Tag: "three"}, 400},
		{"past the end", last.LastPosition + 1, journal.Filter{}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seq := func(s *jsstore.Store) func(func(journal.Event, error) bool) {
				return s.ReadAll(ctx, 0, tt.from, tt.f, tt.limit)
			}
			want := read(true, seq)
			d0, _ := jsstore.ReadCounts(r)
			got := read(false, seq)
			d1, _ := jsstore.ReadCounts(r)
			sameEvents(t, "ReadAll", got, want)
			// Each batch holds up to 300 of the partition's events (the
			// tag filter is the reader's; the kind's is the server's).
			if max := uint64(events/300 + 2); d1-d0 > max {
				t.Errorf("%d direct gets for %d events, want at most %d", d1-d0, len(got), max)
			}
		})
	}
	for id := range 20 {
		for _, kind := range []string{"a", "b"} {
			stream := journal.StreamID(kind, fmt.Sprint(id))
			for _, from := range []uint64{0, 50} {
				seq := func(s *jsstore.Store) func(func(journal.Event, error) bool) { return s.Read(ctx, stream, from, 0) }
				sameEvents(t, "Read "+stream, read(false, seq), read(true, seq))
			}
		}
	}
}

// A read right after another store's append, through another server,
// sees it, whichever replica answers: Read at once (its bound is the
// leader's last event of the entity), ReadAll once the reader's position
// has reached the append (its bound is the partition's last position).
// Repeated, since a replica lags the leader only for a moment.
func TestReadSeesAnotherServersAppend(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := jsstore.Config{Prefix: "ryw", Partitions: 1, Replicas: 3}
	w := openStore(t, c.Connect(0), cfg)
	readers := []*jsstore.Store{openStore(t, c.Connect(1), cfg), openStore(t, c.Connect(2), cfg)}
	// A plain direct get right after each append, on the readers'
	// servers: how often a replica there does not have it yet (the trap
	// the reads' bounds are for).
	naive := make([]*jsread.Reader, 2)
	for i := range naive {
		rd, err := jsread.New(c.Connect(1+i), jsread.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		naive[i] = rd
	}
	// Load on the partition meanwhile, so that replicas have work to
	// catch up with: 4 writers of 20-event appends.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	defer func() { stopLoad(); load.Wait() }()
	for k := range 4 {
		load.Go(func() {
			evs := make([]journal.Event, 20)
			for i := range evs {
				evs[i] = journal.Event{Type: "Load", Payload: make([]byte, 200)}
			}
			var last uint64
			for loadCtx.Err() == nil {
				r, err := w.Append(loadCtx, journal.AppendRequest{Stream: journal.StreamID("load", fmt.Sprint(k)), Expected: last, Events: evs})
				if err != nil {
					return
				}
				last = r.LastSequence
			}
		})
	}
	stale := 0
	last := map[string]uint64{}
	const appends = 200
	for i := range appends {
		stream := journal.StreamID("acct", fmt.Sprint(i%3))
		res, err := w.Append(ctx, journal.AppendRequest{Stream: stream, Expected: last[stream],
			Events: []journal.Event{{Type: "E", Payload: fmt.Append(nil, i)}}})
		if err != nil {
			t.Fatal(err)
		}
		last[stream] = res.LastSequence
		if b, err := naive[i%2].Direct(ctx, "RYW_P0", res.LastPosition, "", 1); err != nil {
			t.Fatal(err)
		} else if len(b.Msgs) == 0 {
			stale++
		}
		r := readers[i%2]
		evs := journaltest.Collect(t, r.Read(ctx, stream, res.LastSequence, 0))
		if len(evs) != 1 || evs[0].Position != res.LastPosition || string(evs[0].Payload) != fmt.Sprint(i) {
			t.Fatalf("append %d at %d: Read through another server got %d events (%v)", i, res.LastPosition, len(evs), positions(evs))
		}
		if _, err := r.WaitPosition(ctx, 0, res.LastPosition-1); err != nil {
			t.Fatal(err)
		}
		evs = journaltest.Collect(t, r.ReadAll(ctx, 0, res.LastPosition, journal.Filter{}, 1))
		if len(evs) != 1 || evs[0].Position != res.LastPosition {
			t.Fatalf("append %d at %d: ReadAll through another server got %d events (%v)", i, res.LastPosition, len(evs), positions(evs))
		}
	}
	t.Logf("a plain direct get right after the append missed it %d times in %d", stale, appends)
	for i, r := range readers {
		d, l := jsstore.ReadCounts(r)
		t.Logf("reader %d: %d direct gets, %d leader gets", i, d, l)
	}
}

// A replica that lags (simulated: its batches stop short of the bound) is
// caught: the read asks again, then reads the rest from the leader, and
// yields everything up to its bound. Without the check the reads would
// come back short.
func TestReadBehindReplica(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := openStore(t, c.Connect(0), jsstore.Config{Prefix: "lag", Partitions: 1, ReadBatch: 50})
	last := fill(t, st, 500, 4)
	all := journaltest.Collect(t, st.ReadAll(ctx, 0, 0, journal.Filter{}, 0))
	entity := journaltest.Collect(t, st.Read(ctx, "b/1", 0, 0))
	kind := journaltest.Collect(t, st.ReadAll(ctx, 0, 0, journal.Filter{Kind: "a"}, 0))
	for _, tt := range []struct {
		name    string
		catchUp int // direct batches answered short before the replica catches up (-1: never)
	}{
		{"catches up after one short batch", 1},
		{"catches up after three", 3},
		{"never catches up", -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The replica holds the first 300 messages only, for a while.
			short := 0
			jsstore.SetDirectHook(st, func(_ string, _ uint64, b *jsread.Batch) {
				if tt.catchUp >= 0 && short >= tt.catchUp {
					return
				}
				for i, m := range b.Msgs {
					if m.Sequence > 300 {
						b.Msgs, b.Pending = b.Msgs[:i], 0
						short++
						return
					}
				}
				if len(b.Msgs) == 0 || b.Msgs[len(b.Msgs)-1].Sequence >= 300 {
					b.Pending = 0
					short++
				}
			})
			defer jsstore.SetDirectHook(st, nil)
			for _, r := range []struct {
				name string
				seq  func(func(journal.Event, error) bool)
				want []journal.Event
			}{
				{"ReadAll", st.ReadAll(ctx, 0, 0, journal.Filter{}, 0), all},
				{"Read", st.Read(ctx, "b/1", 0, 0), entity},
				{"ReadAll of a kind", st.ReadAll(ctx, 0, 0, journal.Filter{Kind: "a"}, 0), kind},
			} {
				short = 0
				jsstore.DropTails(st) // read the stream, not the tail cache
				_, l0 := jsstore.ReadCounts(st)
				sameEvents(t, r.name, journaltest.Collect(t, r.seq), r.want)
				_, l1 := jsstore.ReadCounts(st)
				if short == 0 {
					t.Fatalf("%s: the hook never shortened a batch", r.name)
				}
				t.Logf("%s: %d leader reads, %d short batches", r.name, l1-l0, short)
				if r.name == "ReadAll" && tt.catchUp < 0 && l1-l0 < (last.LastPosition-300)/2 {
					t.Errorf("%s: a replica that never catches up: %d leader reads", r.name, l1-l0)
				}
			}
		})
	}
}

// An entity's recovery reads its 1,000 events in a few batches: one
// leader read (its last event, the bound) and ceil(1000/ReadBatch)
// direct gets, not 1,000 round trips; also for a new owner on another
// server right after it acquired the partition.
func TestRecoveryReadsInBatches(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := jsstore.Config{Prefix: "rec", Partitions: 1, Replicas: 3, RequireOwnership: true}
	old := openStore(t, c.Connect(0), cfg)
	if _, err := old.Acquire(ctx, 0, 1, "old"); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 10 {
		evs := make([]journal.Event, 100)
		for k := range evs {
			evs[k] = journal.Event{Type: "Deposited", Payload: fmt.Append(nil, i*100+k)}
		}
		r, err := old.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: last, Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		last = r.LastSequence
		// Another entity's events in between.
		if _, err := old.Append(ctx, journal.AppendRequest{Stream: "acct/2", Expected: uint64(i), Events: evs[:1]}); err != nil {
			t.Fatal(err)
		}
	}
	recover := func(st *jsstore.Store, who string) {
		d0, l0 := jsstore.ReadCounts(st)
		evs := journaltest.Collect(t, st.Read(ctx, "acct/1", 1, 0))
		d1, l1 := jsstore.ReadCounts(st)
		if len(evs) != 1000 || evs[0].Sequence != 1 || evs[999].Sequence != 1000 {
			t.Fatalf("%s recovered %d events", who, len(evs))
		}
		for i, ev := range evs {
			if string(ev.Payload) != fmt.Sprint(i) {
				t.Fatalf("%s: event %d is %q", who, i, ev.Payload)
			}
		}
		t.Logf("%s: 1,000 events in %d direct gets and %d leader reads", who, d1-d0, l1-l0)
		if d1-d0 > 2+1 || l1-l0 > 1+2 {
			t.Fatalf("%s: %d direct gets and %d leader reads for 1,000 events, want at most 3 and 3", who, d1-d0, l1-l0)
		}
	}
	recover(old, "the owner")
	next := openStore(t, c.Connect(2), cfg)
	if _, err := next.Acquire(ctx, 0, 2, "new"); err != nil {
		t.Fatal(err)
	}
	recover(next, "a new owner after Acquire")
}

// A stream created before batched reads (no AllowDirect) is updated to
// allow direct gets when the store opens it, and reads in batches.
func TestOpenAllowsDirectOnOldStreams(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := c.JetStream(0)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "OLD_P0", Subjects: []string{"old.p0.>"}, Storage: jetstream.FileStorage, Replicas: 1,
		AllowAtomicPublish: true, DenyDelete: true, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, c.Connect(0), jsstore.Config{Prefix: "old", Partitions: 1})
	info, err := js.Stream(ctx, "OLD_P0")
	if err != nil {
		t.Fatal(err)
	}
	if !info.CachedInfo().Config.AllowDirect {
		t.Fatal("the old stream does not allow direct gets after Open")
	}
	r := journaltest.MustAppend(t, st, "a/1", 0, journaltest.Ev("E", "1"), journaltest.Ev("E", "2"))
	waitTail(ctx, t, st, r.LastPosition)
	jsstore.DropTails(st) // so that the read below asks the stream
	d0, _ := jsstore.ReadCounts(st)
	if evs := journaltest.Collect(t, st.ReadAll(ctx, 0, 0, journal.Filter{}, 0)); len(evs) != 2 {
		t.Fatalf("%d events", len(evs))
	}
	if d1, _ := jsstore.ReadCounts(st); d1-d0 != 1 {
		t.Fatalf("%d direct gets for 2 events, want 1", d1-d0)
	}
}

// waitTail waits until the store's watcher has given partition 0's tail
// cache the events up to pos.
func waitTail(ctx context.Context, t *testing.T, st *jsstore.Store, pos uint64) {
	t.Helper()
	for jsstore.TailEnd(st, 0) < pos {
		if ctx.Err() != nil {
			t.Fatalf("the watcher did not deliver the events up to %d", pos)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTailCacheReadsOnceForManyReaders: the projections of a node all read
// the same recent events; with the tail cache, many readers at once cost
// about what one reader costs, and each gets every event, in order, as
// the stream has it, also when appends go on meanwhile.
func TestTailCacheReadsOnceForManyReaders(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := openStore(t, c.Connect(0), jsstore.Config{Prefix: "tail", Partitions: 1, ReadBatch: 100})
	waitTail(ctx, t, st, fill(t, st, 600, 4).LastPosition) // then no delivery refills a dropped cache
	jsstore.SetLeaderReads(st, true)
	want := journaltest.Collect(t, st.ReadAll(ctx, 0, 0, journal.Filter{}, 0))
	wantKind := journaltest.Collect(t, st.ReadAll(ctx, 0, 0, journal.Filter{Kind: "a"}, 0))
	jsstore.SetLeaderReads(st, false)

	jsstore.DropTails(st)
	d0, _ := jsstore.ReadCounts(st)
	sameEvents(t, "one reader", journaltest.Collect(t, st.ReadAll(ctx, 0, 0, journal.Filter{}, 0)), want)
	d1, _ := jsstore.ReadCounts(st)
	one := d1 - d0

	jsstore.DropTails(st)
	const readers = 8
	got := make([][]journal.Event, readers)
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Like a projection: batches of 64 from its last position.
			f := journal.Filter{}
			if i%2 == 1 {
				f = journal.Filter{Kind: "a"}
			}
			var from uint64
			for {
				var batch []journal.Event
				for ev, err := range st.ReadAll(ctx, 0, from+1, f, 64) {
					if err != nil {
						t.Error(err)
						return
					}
					batch = append(batch, ev)
				}
				if len(batch) == 0 {
					return
				}
				got[i] = append(got[i], batch...)
				from = batch[len(batch)-1].Position
			}
		}()
	}
	wg.Wait()
	d2, _ := jsstore.ReadCounts(st)
	for i := range readers {
		w := want
		if i%2 == 1 {
			w = wantKind
		}
		sameEvents(t, fmt.Sprintf("reader %d", i), got[i], w)
	}
	t.Logf("direct gets: one reader %d, %d readers at once %d", one, readers, d2-d1)
	if d2-d1 > 2*one+2 {
		t.Fatalf("%d readers made %d direct gets, one reader %d: the tail cache is not shared", readers, d2-d1, one)
	}
}

// TestReopenUpdatesNoStream: opening a store on existing streams binds to
// them; it updates a stream only when its settings differ (the server
// stores an unset per-subject limit as -1: counting that as a difference
// made every node update every stream at every start).
func TestReopenUpdatesNoStream(t *testing.T) {
	c := bustest.Start(t, 1)
	openStore(t, c.Connect(0), jsstore.Config{Prefix: "reopen", Partitions: 4})
	var logs strings.Builder
	var mu sync.Mutex
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil)
	openStore(t, c.Connect(0), jsstore.Config{Prefix: "reopen", Partitions: 4, Logger: slog.New(h)})
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), "updating the stream's settings") {
		t.Fatalf("a second open updated streams:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A stream whose leader steps down answers "temporarily unavailable", or
// nothing, until the election ends: the store's reads ask again within
// their timeout, so no read (and no command recovering from it) fails
// because a leader moved. Each round moves the leader and reads at once.
func TestReadsRideOutALeaderMove(t *testing.T) {
	c := bustest.Start(t, 3)
	st := openOne(t, c, "move", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ev := []journal.Event{{Type: "Deposited", Payload: []byte(`{"amount":1}`)}}
	if _, err := st.Append(ctx, journal.AppendRequest{Stream: "acct/1", Events: ev}); err != nil {
		t.Fatal(err)
	}
	nc := c.Connect(1)
	for round := range 5 {
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN.MOVE_P0", nil, 5*time.Second); err != nil {
			t.Fatalf("round %d: step down: %v", round, err)
		}
		for i := range 20 {
			evs, err := collect(st.Read(ctx, "acct/1", 0, 0))
			if err != nil || len(evs) != 1 {
				t.Fatalf("round %d, read %d right after the leader stepped down: %d events, %v", round, i, len(evs), err)
			}
			if _, _, err := st.Idempotent(ctx, "acct/1", fmt.Sprintf("k%d-%d", round, i)); err != nil {
				t.Fatalf("round %d, look-up %d right after the leader stepped down: %v", round, i, err)
			}
		}
	}
}

func collect(seq iter.Seq2[journal.Event, error]) ([]journal.Event, error) {
	var out []journal.Event
	for ev, err := range seq {
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// Appends sent right after the stream's leader stepped down are not
// failed for the moment it has no leader: the append's reads before its
// commit (the key's look-up, the stream's head) ask again until a leader
// answers (retryRead), so the commit goes to the new one. Without those
// retries the first append fails with a read timeout.
func TestAppendsRideOutALeaderMove(t *testing.T) {
	c := bustest.Start(t, 3)
	st := openOne(t, c, "amove", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ev := []journal.Event{{Type: "Deposited", Payload: []byte(`{"amount":1}`)}}
	nc := c.Connect(1)
	seq := uint64(0)
	for round := range 3 {
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN.AMOVE_P0", nil, 5*time.Second); err != nil {
			t.Fatalf("round %d: step down: %v", round, err)
		}
		for i := range 5 {
			res, err := st.Append(ctx, journal.AppendRequest{Stream: "acct/1", Expected: seq, Events: ev, IdempotencyKey: fmt.Sprintf("k%d-%d", round, i)})
			if err != nil {
				t.Fatalf("round %d, append %d right after the leader stepped down: %v", round, i, err)
			}
			seq = res.LastSequence
		}
	}
	if evs, err := collect(st.Read(ctx, "acct/1", 0, 0)); err != nil || len(evs) != 15 {
		t.Fatalf("acct/1: %d events, %v; want 15", len(evs), err)
	}
}
