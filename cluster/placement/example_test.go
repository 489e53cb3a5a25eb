package placement_test

import (
	"fmt"
	"slices"

	"github.com/troupe-dev/troupe/cluster/placement"
)

func ExampleAssign() {
	members := []string{"node-a", "node-b", "node-c"}
	before := placement.Assign(256, members)

	after := placement.Assign(256, append(members, "node-d"))
	loads := placement.Loads(after)
	for _, m := range []string{"node-a", "node-b", "node-c", "node-d"} {
		fmt.Println(m, loads[m])
	}

	moved, moves := placement.Diff(before, after)
	toD := 0
	for _, mv := range moves {
		if mv.To == "node-d" {
			toD++
		}
	}
	fmt.Printf("%d shards move, %d of them to node-d\n", moved, toD)

	// Order does not matter: every node computes the same placement.
	fmt.Println(slices.Equal(after, placement.Assign(256, []string{"node-d", "node-c", "node-b", "node-a"})))
	// Output:
	// node-a 66
	// node-b 66
	// node-c 58
	// node-d 66
	// 67 shards move, 66 of them to node-d
	// true
}

func ExampleMaxLoad() {
	fmt.Println(placement.MaxLoad(256, 16), placement.MaxLoad(256, 32))
	// Output:
	// 17 8
}
