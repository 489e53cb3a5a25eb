// Package placement decides which node should own each shard of a cluster.
//
// Every node computes the same placement from the same membership: [Assign]
// is a pure function of the shard count and of the set of member ids (the
// alive members that carry the shards role), whatever their order, on every
// platform and Go version. It says who should own a shard; the lease layer
// makes ownership authoritative and moves shards towards this placement.
//
//	owners := placement.Assign(256, []string{"node-a", "node-b", "node-c"})
//	// owners[s] is the node that should own shard s (actors.ShardOf maps
//	// an entity to its shard).
//
//	next := placement.Assign(256, []string{"node-a", "node-b", "node-c", "node-d"})
//	moved, moves := placement.Diff(owners, next) // about 256/4 shards, nearly all to node-d
//
// What it guarantees, and what it cannot:
//
//   - Balance: no member holds more than [MaxLoad](shards, members) shards,
//     which is at most 1.1 × shards/members whenever shards/members ≥ 10
//     (and never less than the ceiling of shards/members, the least any
//     placement can do).
//   - Stability: a member that joins takes shards mostly from the others
//     and a member that leaves gives its shards away; a few other shards
//     may move too, when the members' capacities change. No pure function
//     of the member set can both keep every member within 1.1 × the mean
//     and never move a shard the leaver did not own:
//     docs/adr/0012-shard-placement.md proves it and gives the measured
//     movement.
//
// The algorithm: each member ranks the shards in an order of its own (a
// permutation of the shard numbers keyed by the FNV-1a hash of its id),
// every shard goes to the member that ranks it best (rendezvous hashing on
// ranks: stable by itself, but not balanced), each member keeps at most
// MaxLoad shards, those it ranks best, and the overflow goes, shard by
// shard in shard order, to the member that ranks it best among those with
// room left. The cost is O(shards × members) time and O(shards) memory;
// 4096 shards over 16 members take a few hundred microseconds.
package placement
