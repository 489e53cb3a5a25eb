// Package cluster holds what a Troupe cluster agrees on: how entities map to
// shards and shards to nodes. Membership (serf), ownership leases and the
// replicated log come with the cluster work; today one node owns every
// shard. The node's composition root is in cluster/node, the embedded NATS
// server in cluster/bus.
//
//	t := cluster.SingleNode("node-1")
//	s := t.ShardOf("account", "acc-1")
//	owner := t.Owner(s) // "node-1"
package cluster

import "hash/fnv"

// DefaultShards is the number of shards of a cluster. It is fixed for the
// life of a cluster's data: changing it moves entities between shards.
const DefaultShards = 256

// Shard is a shard number in [0, NumShards).
type Shard uint32

// ShardTable maps entities to shards and shards to their owning node.
// Its methods are safe for concurrent use.
type ShardTable struct {
	shards uint32
	self   string
}

// SingleNode is the table of a one-node cluster: node owns every shard.
func SingleNode(node string) *ShardTable {
	return &ShardTable{shards: DefaultShards, self: node}
}

// NumShards is the number of shards.
func (t *ShardTable) NumShards() int { return int(t.shards) }

// ShardOf maps an entity to its shard: FNV-1a of "kind/id", so that the
// entities of one kind spread over all shards and kinds spread too.
func (t *ShardTable) ShardOf(kind, id string) Shard {
	h := fnv.New32a()
	h.Write([]byte(kind))
	h.Write([]byte{'/'})
	h.Write([]byte(id))
	return Shard(h.Sum32() % t.shards)
}

// Owner is the node that owns a shard.
func (t *ShardTable) Owner(Shard) string { return t.self }

// Local reports whether this node owns the shard.
func (t *ShardTable) Local(s Shard) bool { return t.Owner(s) == t.self }
