package ownedcopy_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/bus/bustest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
	"github.com/troupe-dev/troupe/journal/jsstore"
	"github.com/troupe-dev/troupe/journal/jsstore/ownedcopy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// opts are what a test's store is opened with.
type opts struct {
	prefix     string
	partitions int
	replicas   int
	dir        string
	acquire    bool          // acquire every partition at epoch 1 as "suite"
	dropAfter  time.Duration // ownedcopy.Config.DropAfter
	holder     string
	timeout    time.Duration // jsstore.Config.Timeout (0: its default)
	linger     time.Duration // ownedcopy.Config.Linger
}

// open opens a replicated store on nc and its local copy in o.dir.
func open(t testing.TB, nc *nats.Conn, o opts) *ownedcopy.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		js  *jsstore.Store
		err error
	)
	// Right after the cluster forms, the meta leader may not know every
	// peer yet ("no suitable peers"): retry, bounded.
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(200 * time.Millisecond) {
		js, err = jsstore.Open(ctx, jsstore.Config{Conn: nc, Prefix: o.prefix, Partitions: o.partitions, Replicas: o.replicas, RequireOwnership: true, KeepEventTimes: true, Timeout: o.timeout})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := ownedcopy.Open(ownedcopy.Config{Store: js, Dir: o.dir, DropAfter: o.dropAfter, Linger: o.linger})
	if err != nil {
		js.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if o.acquire {
		holder := o.holder
		if holder == "" {
			holder = "suite"
		}
		for p := range o.partitions {
			if _, err := st.Acquire(ctx, p, 1, holder); err != nil {
				t.Fatal(err)
			}
		}
	}
	return st
}

// conformance runs the journal conformance suite on the local copy over
// a replicated store that owns every partition (reads of unowned
// partitions only pass through).
func conformance(t *testing.T, servers, replicas, partitions int) {
	c := bustest.Start(t, servers)
	nc := c.Connect(0)
	n := 0
	of := map[journal.Store]opts{}
	journaltest.Run(t, journaltest.Suite{
		Gaps: true,
		Open: func(t *testing.T) journal.Store {
			n++
			o := opts{prefix: "o" + string(rune('a'+n%26)) + string(rune('a'+n/26)), partitions: partitions, replicas: replicas,
				dir: filepath.Join(t.TempDir(), "owned"), acquire: true}
			st := open(t, nc, o)
			of[st] = o
			return st
		},
		Reopen: func(t *testing.T, s journal.Store) journal.Store {
			s.Close()
			st := open(t, nc, of[s])
			of[st] = of[s]
			return st
		},
	})
}

func TestConformanceOneServer(t *testing.T) { conformance(t, 1, 1, 4) }

func TestConformanceThreeServersR3(t *testing.T) {
	if testing.Short() {
		t.Skip("three servers: not in -short")
	}
	conformance(t, 3, 3, 2)
}
