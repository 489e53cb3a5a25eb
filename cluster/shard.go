// Package cluster holds what a Troupe cluster agrees on: how entities map to
// shards and shards to nodes. It implements the placement the actors
// runtime declares (actors.Placement); membership lives in
// cluster/membership, the embedded NATS server in cluster/bus, and the
// composition root that wires them in cluster/node. Ownership leases and
// routing between nodes come with the sharding work; today every node owns
// every shard of its own data.
//
//	t := cluster.SingleNode("node-1")
//	s := t.ShardOf("account", "acc-1")
//	owner, local := t.Owner(s) // "node-1", true
package cluster

import "github.com/troupe-dev/troupe/actors"

// DefaultShards is the number of shards of a cluster. It is fixed for the
// life of a cluster's data: changing it moves entities between shards.
const DefaultShards = actors.DefaultShards

// ShardTable maps entities to shards and shards to their owning node. It
// implements actors.Placement. Its methods are safe for concurrent use.
type ShardTable struct {
	shards int
	self   string
}

var _ actors.Placement = (*ShardTable)(nil)

// SingleNode is the table of a one-node cluster: node owns every shard.
func SingleNode(node string) *ShardTable {
	return &ShardTable{shards: DefaultShards, self: node}
}

// NumShards is the number of shards.
func (t *ShardTable) NumShards() int { return t.shards }

// ShardOf maps an entity to its shard (actors.ShardOf: FNV-1a of
// "kind/id").
func (t *ShardTable) ShardOf(kind, id string) int { return actors.ShardOf(kind, id, t.shards) }

// Owner is the node that owns a shard, and whether it is this node.
func (t *ShardTable) Owner(int) (string, bool) { return t.self, true }
