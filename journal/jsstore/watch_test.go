package jsstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore"
)

// Another node's appends wake this node's WaitPosition within
// milliseconds, and a read after the wake-up finds them (read-your-writes
// across nodes).
func TestOtherWritersWake(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := node(t, c.Connect(0), "wake", 3, nil)
	b := node(t, c.Connect(2), "wake", 3, nil)
	if _, err := a.Acquire(ctx, 1, 1, "node-a"); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var lat []time.Duration
	for i := range n {
		after := b.LastPosition(1)
		woke := make(chan time.Time, 1)
		errc := make(chan error, 1)
		go func() {
			p, err := b.WaitPosition(ctx, 1, after)
			if err == nil && p <= after {
				err = fmt.Errorf("woke at %d, not after %d", p, after)
			}
			errc <- err
			woke <- time.Now()
		}()
		r, err := appendEv(ctx, a, "acct/1-w", uint64(i), fmt.Sprint("E", i))
		if err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("append %d: B's WaitPosition did not wake", i)
		}
		lat = append(lat, max(0, (<-woke).Sub(acked)))
		if got := b.LastPosition(1); got < r.LastPosition {
			t.Fatalf("B's LastPosition %d after waking, A's append at %d", got, r.LastPosition)
		}
		evs := journaltest.Collect(t, b.ReadAll(ctx, 1, r.LastPosition, journal.Filter{}, 0))
		if len(evs) != 1 || evs[0].Type != fmt.Sprint("E", i) {
			t.Fatalf("B's ReadAll after waking: %+v", evs)
		}
	}
	slices.Sort(lat)
	t.Logf("wake-up after the writer's ack, %d appends: p50 %v, p99 %v, max %v", n, lat[n/2], lat[n*99/100], lat[n-1])
}

// A node that follows another node's partition (its watcher) gets the new
// events with the watcher's deliveries: a projection-like reader on it
// reads them from the tail cache, not from the stream, and gets exactly
// the stream's events (multi-event appends, tags, metadata, idempotency
// records between them in the stream), also when its cache is dropped
// now and then and filled again by reads while deliveries go on, and
// when the stream's leader moves and the watcher's consumer is lost.
func TestWatcherFeedsTheTail(t *testing.T) {
	c := bustest.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := node(t, c.Connect(0), "feed", 3, nil)
	b := node(t, c.Connect(2), "feed", 3, nil)
	if _, err := a.Acquire(ctx, 1, 1, "node-a"); err != nil {
		t.Fatal(err)
	}
	const appends = 200
	done := writeMixed(ctx, a, appends, func(i int) error {
		switch i {
		case appends / 3: // the stream's leader moves
			_, err := c.Connect(1).Request("$JS.API.STREAM.LEADER.STEPDOWN.FEED_P1", nil, 5*time.Second)
			return err
		case 2 * appends / 3: // the watcher's consumer is lost: nats.go makes a new one
			return deleteConsumers(ctx, c.JetStream(1), "FEED_P1")
		}
		return nil
	}, nil)
	got, gets, drops := follow(ctx, t, b, done, a)
	t.Logf("%d events in %d appends followed with %d direct gets (%d cache drops)", len(got), appends, gets, drops)
	if gets > uint64(2*drops+5) {
		t.Fatalf("%d direct gets to follow %d appends with %d cache drops: the watcher does not feed the tail", gets, appends, drops)
	}
}

// A node's own appends go into its tail cache as a read would return
// them, when the log keeps the events' times: its projections read them
// from memory. An event without a time (the stored time is then the
// server's) leaves its batch to a read.
func TestOwnAppendsFeedTheTail(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := nodeWith(t, jsstore.Config{Conn: c.Connect(0), Prefix: "own", Partitions: 2, RequireOwnership: true, KeepEventTimes: true,
		PartitionOf: func(string) int { return 1 }})
	if _, err := a.Acquire(ctx, 1, 1, "node-a"); err != nil {
		t.Fatal(err)
	}
	const appends = 200
	untimed := 0
	done := writeMixed(ctx, a, appends, nil, func(i int) bool {
		if i%25 == 7 {
			untimed++
			return false
		}
		return true
	})
	got, gets, drops := follow(ctx, t, a, done, a)
	t.Logf("%d events in %d appends (%d without times) followed with %d direct gets (%d cache drops)", len(got), appends, untimed, gets, drops)
	if gets > uint64(2*drops+2*untimed+3) {
		t.Fatalf("%d direct gets to follow %d appends (%d without times) with %d cache drops: the appends do not feed the tail", gets, appends, untimed, drops)
	}
}

// writeMixed appends to partition 1 of w, one append at a time: 1-3
// events each over 7 entities, with tags, metadata and an idempotency
// key. before runs before append i; timed says whether its events carry
// a time (nil: none does). An append that fails (a leader moving) is
// tried again with its key, for up to 10 s. The channel says how it
// ended.
func writeMixed(ctx context.Context, w *jsstore.Store, appends int, before func(i int) error, timed func(i int) bool) <-chan error {
	done := make(chan error, 1)
	go func() {
		seq := map[string]uint64{}
		for i := range appends {
			if before != nil {
				if err := before(i); err != nil {
					done <- err
					return
				}
			}
			stream := fmt.Sprintf("acct/1-%d", i%7)
			evs := make([]journal.Event, 1+i%3)
			stamp := timed != nil && timed(i)
			for j := range evs {
				evs[j] = journal.Event{Type: "E", Payload: fmt.Appendf(nil, `{"i":%d,"j":%d}`, i, j),
					Tags: []string{fmt.Sprint("t", i%4)}, Metadata: map[string]string{"n": fmt.Sprint(i)}}
				if stamp {
					evs[j].Time = time.Now()
				}
			}
			req := journal.AppendRequest{Stream: stream, Expected: seq[stream], Events: evs, IdempotencyKey: fmt.Sprint("k", i)}
			r, err := w.Append(ctx, req)
			for try := 0; err != nil && try < 100; try++ {
				time.Sleep(100 * time.Millisecond)
				r, err = w.Append(ctx, req)
			}
			if err != nil {
				done <- err
				return
			}
			if r.Duplicate {
				r.LastSequence = seq[stream] + uint64(len(evs))
			}
			seq[stream] = r.LastSequence
		}
		done <- nil
	}()
	return done
}

// follow reads partition 1 of r as a projection does (batches of 64 from
// its last position, waiting for new ones) until the writer w is done
// and r has read all it wrote, dropping r's tail cache now and then. It
// checks that r read exactly the stream's events, and returns them, the
// direct gets it took, and how many times the cache was dropped.
func follow(ctx context.Context, t *testing.T, r *jsstore.Store, done <-chan error, w *jsstore.Store) (got []journal.Event, gets uint64, drops int) {
	t.Helper()
	var from uint64
	d0, _ := jsstore.ReadCounts(r)
	for writing := true; ; {
		if writing {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				writing = false
			default:
			}
		}
		if len(got) > 0 && len(got)%97 < 3 && drops < len(got)/97 {
			jsstore.DropTails(r) // the next read fills it; deliveries go on
			drops++
		}
		head := r.LastPosition(1)
		for ev, err := range r.ReadAll(ctx, 1, from+1, journal.Filter{}, 64) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ev)
			from = ev.Position
		}
		if !writing && from >= w.LastPosition(1) {
			break
		}
		if from >= head {
			wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_, _ = r.WaitPosition(wctx, 1, head)
			wcancel()
		}
	}
	d1, _ := jsstore.ReadCounts(r)
	jsstore.SetLeaderReads(r, true)
	defer jsstore.SetLeaderReads(r, false)
	want := journaltest.Collect(t, r.ReadAll(ctx, 1, 0, journal.Filter{}, 0))
	sameEvents(t, "the follower's reads", got, want)
	return got, d1 - d0, drops
}

// deleteConsumers deletes the consumers of a stream (a watcher's: its
// ordered consumer takes a new name whenever nats.go starts it again, as
// after a leader moved, so the name it began with may be gone), trying
// for up to 10 s until it has deleted one.
func deleteConsumers(ctx context.Context, js jetstream.JetStream, stream string) error {
	for end := time.Now().Add(10 * time.Second); ; {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		names := st.ConsumerNames(ctx)
		deleted := 0
		for name := range names.Name() {
			if err := js.DeleteConsumer(ctx, stream, name); err == nil {
				deleted++
			} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return err
			}
		}
		if err := names.Err(); err != nil {
			return err
		}
		if deleted > 0 {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("stream %s: no consumer to delete within 10 s", stream)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
