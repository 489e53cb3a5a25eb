package actors

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Placement tells the runtime where entities live: which shard an entity
// belongs to, and which node owns that shard. The runtime declares it and
// the cluster implements it (see docs/adr/0004-cluster-seams.md); a single
// node uses LocalPlacement.
//
// Concurrency: every method is called from many goroutines at once, on the
// path of every command, and must neither block nor allocate much. The
// answers may change over time (ownership moves), but NumShards and
// ShardOf never change for the life of the data.
type Placement interface {
	// NumShards is the number of shards, fixed for the life of the data.
	NumShards() int
	// ShardOf maps an entity to its shard, in [0, NumShards).
	ShardOf(kind, id string) int
	// Owner returns the node that owns shard now, and whether that node
	// is this one. An owner of "" means nobody owns the shard at the
	// moment (it is moving): the command gets a retryable *NotOwnerError.
	Owner(shard int) (node string, local bool)
}

// Forwarder sends a command to the node that owns its entity, and returns
// that node's outcome or error, as if the command had been sent there. The
// receiving node hands the command to Runtime.SendForwarded. owner is the
// owner the placement names, or "" while the shard moves: the forwarder
// then waits (bounded by ctx) for the shard to be served again. external
// tells whether the command came from a client (commands registered with
// HandleInternal are refused) or from trusted code such as a reactor.
//
// Concurrency: called from many goroutines at once; it blocks until the
// owner answers or ctx ends.
type Forwarder interface {
	Forward(ctx context.Context, owner string, cmd *troupev1.Command, external bool) (*Outcome, error)
}

// NotOwnerError is a command for an entity whose shard this node does not
// own, when the runtime cannot (or, for a forwarded command, must not)
// forward it. It is safe to retry: ownership settles, or the client asks
// the owner.
type NotOwnerError struct {
	Kind, ID string
	Shard    int
	// Owner is the node that owns the shard, or "" while it moves.
	Owner string
	// Err is the journal's refusal when the shard moved while the
	// command was on its way (errors.Is journal.ErrNotOwner), else nil.
	Err error
}

// Unwrap returns the journal's refusal, if any.
func (e *NotOwnerError) Unwrap() error { return e.Err }

func (e *NotOwnerError) Error() string {
	if e.Owner == "" {
		return fmt.Sprintf("actors: %s/%s: shard %d has no owner at the moment (it is moving); retry", e.Kind, e.ID, e.Shard)
	}
	return fmt.Sprintf("actors: %s/%s: shard %d is owned by node %s, not this node", e.Kind, e.ID, e.Shard, e.Owner)
}

// DefaultShards is the number of shards of a single node's placement.
// Changing it moves entities between shards of existing data.
const DefaultShards = 256

// ShardOf maps an entity to one of shards shards: FNV-1a of "kind/id",
// so that the entities of one kind spread over all shards, and kinds
// spread too. Every placement of a Troupe node uses it, so that a single
// node's data keeps its shards when it becomes a cluster.
func ShardOf(kind, id string, shards int) int {
	h := fnv.New32a()
	h.Write([]byte(kind))
	h.Write([]byte{'/'})
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(shards))
}

// LocalPlacement is the placement of a single node: it owns every one of
// DefaultShards shards.
type LocalPlacement struct {
	// Node names this node in errors. Default: "local".
	Node string
}

// NumShards returns DefaultShards.
func (LocalPlacement) NumShards() int { return DefaultShards }

// ShardOf returns ShardOf(kind, id, DefaultShards).
func (LocalPlacement) ShardOf(kind, id string) int { return ShardOf(kind, id, DefaultShards) }

// Owner returns this node, always.
func (p LocalPlacement) Owner(int) (string, bool) {
	if p.Node == "" {
		return "local", true
	}
	return p.Node, true
}

// PartitionOwner is implemented by a Placement whose shards are the
// journal's partitions (a cluster): the side effects of a partition
// (reactors, and projections with a Flush such as the events publisher)
// then run only on the node that owns it, from a checkpoint kept in
// Config.Checkpoints under the owner's epoch.
type PartitionOwner interface {
	// PartitionEpoch reports whether this node owns partition p now, and
	// the epoch (fencing token, never 0) of its ownership.
	PartitionEpoch(p int) (epoch uint64, owned bool)
}

// CheckpointStore keeps the checkpoints of projections with side effects
// where every node reads them (replicated), fenced by the epoch of the
// partition's owner.
type CheckpointStore interface {
	// Load returns projection's checkpoint for partition (0: none).
	Load(ctx context.Context, projection string, partition int) (uint64, error)
	// Save records pos as projection's checkpoint for partition under
	// epoch. A checkpoint saved under a higher epoch makes it fail with
	// an error matching ErrFencedCheckpoint.
	Save(ctx context.Context, projection string, partition int, pos, epoch uint64) error
}

// ErrFencedCheckpoint is matched by CheckpointStore.Save's error when a
// newer owner of the partition has saved a checkpoint.
var ErrFencedCheckpoint = errors.New("actors: checkpoint fenced by a newer owner of the partition")
