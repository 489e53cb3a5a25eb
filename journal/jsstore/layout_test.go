package jsstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal/jsstore"
)

// openLayout opens a store with p partitions, retrying while a fresh
// cluster's meta leader does not know every peer yet, never on a
// *jsstore.LayoutError.
func openLayout(t *testing.T, nc *nats.Conn, replicas, p int) (*jsstore.Store, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		st, err := jsstore.Open(ctx, jsstore.Config{Conn: nc, Prefix: "lay", Partitions: p, Replicas: replicas})
		var le *jsstore.LayoutError
		if err == nil {
			t.Cleanup(func() { st.Close() })
			return st, nil
		}
		if errors.As(err, &le) || time.Since(start) > 30*time.Second {
			return nil, err
		}
	}
}

func TestLayoutRecorded(t *testing.T) {
	c := bustest.Start(t, 3)
	if _, err := openLayout(t, c.Connect(0), 3, 4); err != nil {
		t.Fatal(err)
	}
	// Another node with the same layout opens; one with another is refused.
	if _, err := openLayout(t, c.Connect(1), 3, 4); err != nil {
		t.Fatal(err)
	}
	_, err := openLayout(t, c.Connect(2), 3, 16)
	var le *jsstore.LayoutError
	if !errors.As(err, &le) || le.Recorded != 4 || le.Configured != 16 {
		t.Fatalf("open with 16 partitions: %v; want *jsstore.LayoutError{4, 16}", err)
	}
	want := "the cluster's journal was created with 4 shards; this node is configured with 16 (--shards must match)"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("message %q lacks %q", err, want)
	}
}

// Of first opens racing with different layouts, exactly one layout wins;
// every open with it succeeds and every other is refused.
func TestLayoutFirstOpensRace(t *testing.T) {
	c := bustest.Start(t, 3)
	ps := []int{2, 3, 2, 3, 5, 2}
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		nc := c.Connect(i % 3)
		wg.Go(func() { _, errs[i] = openLayout(t, nc, 3, p) })
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		if err == nil {
			if won != 0 && won != ps[i] {
				t.Fatalf("layouts %d and %d both opened", won, ps[i])
			}
			won = ps[i]
		}
	}
	if won == 0 {
		t.Fatalf("no open succeeded: %v", errs)
	}
	for i, err := range errs {
		var le *jsstore.LayoutError
		switch {
		case ps[i] == won && err != nil:
			t.Fatalf("open with the winning layout %d: %v", won, err)
		case ps[i] != won && (!errors.As(err, &le) || le.Recorded != won || le.Configured != ps[i]):
			t.Fatalf("open with %d after %d won: %v", ps[i], won, err)
		}
	}
}
