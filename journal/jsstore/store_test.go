package jsstore_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore"
)

// conformance runs the journal conformance suite on the store over a
// cluster of servers; every test opens its own streams (a prefix each).
// With owned, the store requires ownership and acquires every partition
// (after a reopen too, with the same epoch and holder).
func conformance(t *testing.T, servers, replicas, partitions int, owned bool) {
	c := bustest.Start(t, servers)
	nc := c.Connect(0)
	n := 0
	open := func(t *testing.T, prefix string) journal.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var (
			st  *jsstore.Store
			err error
		)
		// Right after the cluster forms, the meta leader may not know
		// every peer yet ("no suitable peers"): retry, bounded.
		for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
			st, err = jsstore.Open(ctx, jsstore.Config{Conn: nc, Prefix: prefix, Partitions: partitions, Replicas: replicas, RequireOwnership: owned})
			if err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		for p := range partitions {
			if !owned {
				break
			}
			if _, err := st.Acquire(ctx, p, 1, "suite"); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	prefixes := map[journal.Store]string{}
	journaltest.Run(t, journaltest.Suite{
		// Idempotency records, snapshots and tombstones share the
		// partition's stream: event positions skip their sequences.
		Gaps: true,
		Open: func(t *testing.T) journal.Store {
			n++
			prefix := "t" + string(rune('a'+n%26)) + string(rune('a'+n/26))
			st := open(t, prefix)
			prefixes[st] = prefix
			return st
		},
		Reopen: func(t *testing.T, s journal.Store) journal.Store {
			s.Close()
			st := open(t, prefixes[s])
			prefixes[st] = prefixes[s]
			return st
		},
	})
}

func TestConformanceOneServer(t *testing.T) { conformance(t, 1, 1, 4, false) }

func TestConformanceThreeServersR3(t *testing.T) { conformance(t, 3, 3, 2, false) }

func TestConformanceOwnedOneServer(t *testing.T) { conformance(t, 1, 1, 4, true) }

func TestConformanceOwnedThreeServersR3(t *testing.T) { conformance(t, 3, 3, 2, true) }

// Stream ids may hold any bytes but NUL: they become subject tokens and
// message ids, so they must survive both.
func TestOddStreamIDs(t *testing.T) {
	c := bustest.Start(t, 1)
	ctx := context.Background()
	st, err := jsstore.Open(ctx, jsstore.Config{Conn: c.Connect(0), Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range []string{"a.b", "a b", "x\r\ny", "x\r\nz", "*", ">", "ü/ß", "%2E"} {
		stream := journal.StreamID("odd", id)
		r, err := st.Append(ctx, journal.AppendRequest{Stream: stream, Events: []journal.Event{{Type: "E", Payload: []byte(id)}}, IdempotencyKey: "k"})
		if err != nil {
			t.Fatalf("append to %q: %v", stream, err)
		}
		evs := journaltest.Collect(t, st.Read(ctx, stream, 0, 0))
		if len(evs) != 1 || evs[0].Stream != stream || string(evs[0].Payload) != id || evs[0].Position != r.LastPosition {
			t.Fatalf("read back %q: %+v", stream, evs)
		}
		if again, err := st.Append(ctx, journal.AppendRequest{Stream: stream, Events: []journal.Event{{Type: "E"}}, IdempotencyKey: "k"}); err != nil || !again.Duplicate {
			t.Fatalf("repeat to %q: %+v, %v", stream, again, err)
		}
	}
	got := journaltest.Collect(t, st.Streams(ctx, "odd"))
	if len(got) != 8 {
		t.Fatalf("Streams(odd) = %q", got)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
