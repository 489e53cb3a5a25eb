package cluster

import (
	"fmt"
	"testing"
)

func TestShardOfIsStableAndSpreads(t *testing.T) {
	tab := SingleNode("n1")
	if a, b := tab.ShardOf("account", "acc-1"), tab.ShardOf("account", "acc-1"); a != b {
		t.Fatalf("same entity on shards %d and %d", a, b)
	}
	// Pinned values: a change of the hash would move every stored entity
	// to another shard, so it must never change silently.
	if a, b := tab.ShardOf("account", "acc-1"), tab.ShardOf("transfer", "t-9"); a != 128 || b != 123 {
		t.Fatalf("ShardOf = %d, %d; want 128, 123", a, b)
	}
	counts := make([]int, tab.NumShards())
	const n = 256 * 200
	for i := range n {
		counts[tab.ShardOf("account", fmt.Sprintf("acc-%d", i))]++
	}
	for s, c := range counts {
		if c < 100 || c > 300 {
			t.Fatalf("shard %d holds %d of %d entities: not spread", s, c, n)
		}
	}
	if owner, local := tab.Owner(3); !local || owner != "n1" {
		t.Fatal("single node does not own shard 3")
	}
}
