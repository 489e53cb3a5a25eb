package cluster_test

import (
	"fmt"

	"github.com/troupe-dev/troupe/cluster"
)

func ExampleShardTable() {
	t := cluster.SingleNode("node-1")
	s := t.ShardOf("account", "acc-1")
	fmt.Println(s, t.Owner(s), t.Local(s))
	// Output: 128 node-1 true
}
