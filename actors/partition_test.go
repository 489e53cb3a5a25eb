package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/journaltest"
)

// TestProjectionsOverAPartitionedLog runs the runtime on a log of several
// partitions, as a cluster's: every event reaches the projection exactly
// once, each partition has its own checkpoint, a query given the merged
// tokens of many commands sees all of them, and a rebuild replays every
// partition.
func TestProjectionsOverAPartitionedLog(t *testing.T) {
	const parts, entities, adds = 5, 40, 6
	mem := journaltest.NewMemStore(journaltest.MemConfig{Partitions: parts})
	defer mem.Close()
	var applied atomic.Int64
	setup := counterSum(
		func(tx *actors.Tx, ev journal.Event) error {
			applied.Add(1)
			var a Added
			if err := json.Unmarshal(ev.Payload, &a); err != nil {
				return err
			}
			// One key that every partition's batches write: no update
			// may be lost.
			var m struct{ Sum, Count int }
			if _, err := tx.GetJSON("total", &m); err != nil {
				return err
			}
			m.Sum += a.N
			m.Count++
			return tx.SetJSON("total", m)
		},
		actors.Query{Name: "total", Projection: "sum", Handle: func(_ context.Context, v *actors.View, _ json.RawMessage) (any, error) {
			var m struct{ Sum, Count int }
			_, err := v.GetJSON("total", &m)
			return m, err
		}})
	n := actorstest.Start(t, actorstest.Config{Journal: mem, Setup: setup})
	ctx := context.Background()
	var token journal.Token
	used := map[int]bool{}
	want := 0
	for i := range entities * adds {
		out, err := n.Send(ctx, "counter", fmt.Sprint("c", i%entities), Add{i + 1})
		if err != nil {
			t.Fatal(err)
		}
		if out.Partition != mem.PartitionOf("counter/"+fmt.Sprint("c", i%entities)) {
			t.Fatalf("outcome in partition %d, the stream's is another", out.Partition)
		}
		used[out.Partition] = true
		token = token.Merge(out.Token())
		want += i + 1
	}
	if len(used) < 3 {
		t.Fatalf("the entities landed in %d partitions: the test needs several", len(used))
	}
	var m struct{ Sum, Count int }
	ans, err := n.Query(ctx, "total", nil, token, &m)
	if err != nil {
		t.Fatal(err)
	}
	if m.Sum != want || m.Count != entities*adds {
		t.Fatalf("after waiting for %s: sum %d count %d, want %d and %d", token, m.Sum, m.Count, want, entities*adds)
	}
	for _, p := range token.Partitions() {
		if ans.Token.Position(p) < token.Position(p) {
			t.Fatalf("answer token %s behind the query's %s in partition %d", ans.Token, token, p)
		}
	}
	var st actors.ProjectionStatus
	for _, s := range n.RT.Projections() {
		if s.Name == "sum" {
			st = s
		}
	}
	if len(st.Positions) != parts || len(st.Heads) != parts || st.Position != st.Head {
		t.Fatalf("status %+v: want %d partitions, caught up", st, parts)
	}
	// A token for a partition the log does not have never comes.
	if _, err := n.Query(ctx, "total", nil, journal.TokenAt(parts, 1), nil); err == nil {
		t.Fatal("a query waited for a partition that does not exist and succeeded")
	}

	// Rebuild replays every partition once more.
	before := applied.Load()
	if err := n.RT.RebuildProjection(ctx, "sum"); err != nil {
		t.Fatal(err)
	}
	if err := n.RT.WaitProjection(ctx, "sum", st.Head, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Query(ctx, "total", nil, token, &m); err != nil || m.Count != entities*adds || m.Sum != want {
		t.Fatalf("after rebuild: %+v, %v", m, err)
	}
	if got := applied.Load() - before; got < entities*adds {
		t.Fatalf("the rebuild applied %d events, want at least %d", got, entities*adds)
	}
}
