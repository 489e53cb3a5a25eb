package jsstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

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
	done := make(chan error, 1)
	go func() {
		seq := map[string]uint64{}
		for i := range appends {
			stream := fmt.Sprintf("acct/1-%d", i%7)
			evs := make([]journal.Event, 1+i%3)
			for j := range evs {
				evs[j] = journal.Event{Type: "E", Payload: fmt.Appendf(nil, `{"i":%d,"j":%d}`, i, j),
					Tags: []string{fmt.Sprint("t", i%4)}, Metadata: map[string]string{"n": fmt.Sprint(i)}}
			}
			switch i {
			case appends / 3: // the stream's leader moves
				if _, err := c.Connect(1).Request("$JS.API.STREAM.LEADER.STEPDOWN.FEED_P1", nil, 5*time.Second); err != nil {
					done <- err
					return
				}
			case 2 * appends / 3: // the watcher's consumer is lost: nats.go makes a new one
				if err := c.JetStream(1).DeleteConsumer(ctx, "FEED_P1", jsstore.WatcherConsumer(b, 1)); err != nil {
					done <- err
					return
				}
			}
			req := journal.AppendRequest{Stream: stream, Expected: seq[stream], Events: evs, IdempotencyKey: fmt.Sprint("k", i)}
			r, err := a.Append(ctx, req)
			for try := 0; err != nil && try < 100; try++ { // while the leader moves; the key makes it once
				time.Sleep(100 * time.Millisecond)
				r, err = a.Append(ctx, req)
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
	var got []journal.Event
	var from uint64
	d0, _ := jsstore.ReadCounts(b)
	drops := 0
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
			jsstore.DropTails(b) // the next read fills it; deliveries go on
			drops++
		}
		head := b.LastPosition(1)
		for ev, err := range b.ReadAll(ctx, 1, from+1, journal.Filter{}, 64) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ev)
			from = ev.Position
		}
		if !writing && from >= a.LastPosition(1) {
			break
		}
		if from >= head {
			wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_, _ = b.WaitPosition(wctx, 1, head)
			wcancel()
		}
	}
	d1, _ := jsstore.ReadCounts(b)
	jsstore.SetLeaderReads(b, true)
	want := journaltest.Collect(t, b.ReadAll(ctx, 1, 0, journal.Filter{}, 0))
	sameEvents(t, "the follower's reads", got, want)
	t.Logf("%d events in %d appends followed with %d direct gets (%d cache drops)", len(got), appends, d1-d0, drops)
	if d1-d0 > uint64(2*drops+5) {
		t.Fatalf("%d direct gets to follow %d appends with %d cache drops: the watcher does not feed the tail", d1-d0, appends, drops)
	}
}
