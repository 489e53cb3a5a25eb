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
