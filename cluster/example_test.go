package cluster_test

import (
	"fmt"

	"github.com/troupe-dev/troupe/cluster"
)

func ExampleShardTable() {
	t := cluster.SingleNode("node-1")
	s := t.ShardOf("account", "acc-1")
	owner, local := t.Owner(s)
	fmt.Println(s, owner, local)
	// Output: 128 node-1 true
}
