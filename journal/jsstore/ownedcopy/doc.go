// Package ownedcopy keeps, in the node's own Badger, a copy of the events
// and snapshots of the entities whose partitions (shards) this node owns
// in a cluster's replicated journal (journal/jsstore), and answers an
// entity's recovery (LoadSnapshot, then Read) from it without a round
// trip to JetStream when the copy is known to be complete (ADR 0011,
// "Local copy").
//
// Store wraps a *jsstore.Store and implements journal.Store: writes go to
// the replicated log first and, once acknowledged, are queued for the
// local copy (written behind by one group writer, after a linger, a
// stream's consecutive events in chunks of one Badger key: an append does
// not wait for its local write, a read of the stream does, and does not
// wait for the linger); reads of a partition this node owns are answered
// locally, or catch the stream's missing suffix up from the log first;
// everything else (ReadAll for projections, Idempotent, Info, positions)
// passes straight through.
//
//	js, _ := jsstore.Open(ctx, jsstore.Config{Conn: nc, RequireOwnership: true, ...})
//	st, _ := ownedcopy.Open(ownedcopy.Config{Store: js, Dir: filepath.Join(dataDir, "owned")})
//	defer st.Close() // closes js too
//	fence, _ := st.Acquire(ctx, shard, epoch, nodeID)
//	snap, _ := st.LoadSnapshot(ctx, "account/1") // local once caught up
//	st.Release(shard)                            // local data dropped later
//
// # Invariants
//
//  1. The local copy is a cache, never the source of truth. It holds, per
//     stream, events 1..head (a prefix of the replicated history: events
//     never change once acknowledged, and fencing prevents forks) and the
//     latest snapshot; a read bounded by the head never sees a hole.
//  2. Read and LoadSnapshot are answered only locally when this node owns
//     the stream's partition under a fence F right now (jsstore Holds) and
//     the stream is marked complete under F: every append, snapshot and
//     tombstone under F went through this Store and was written locally
//     (an append's local write may still be queued when the append
//     returns: the read first waits for the stream's queued writes, and a
//     queued write that fails drops the mark before it counts as done).
//     A local write that fails, an error of unknown
//     outcome, an idempotent repeat, two writes of one stream at once, or
//     a change of fence drops the mark, and the next read goes to the log.
//  3. Otherwise the read catches up: it reads the stream's snapshot and its
//     events from the local head + 1 from the log, writes them locally, and
//     marks the stream complete under F only if F was held before the read
//     started and still is after it, with no write of the stream (and no
//     write of unknown outcome in the partition) in between.
//  4. A partition not owned for Config.DropAfter has its local data dropped
//     by a background sweeper (its keys move to a new incarnation at once;
//     the old ones are deleted off the hot path), so the disk holds about
//     the owned entities.
//  5. Reads of partitions not owned pass straight to the log, as do
//     ReadAll, WaitPosition, Idempotent, Info, Streams and Stats.
//  6. No acknowledged event is lost and no read is stale: a read-your-writes
//     across a handover sees every event (the new fence forces a catch-up).
//
// The Store must be the only path of this node's writes to the log (the
// inner store is used for nothing else but Acquire and Release). The
// inner store must keep event times (jsstore.Config.KeepEventTimes): the
// Store stamps each event with this node's clock just before its append
// (never earlier than the stream's last event it knows), so the copy's
// events equal the log's on every node, times included; JetStream does
// not return its own commit timestamp in the ack. A snapshot's time is
// the node's clock at the save (the log's when caught up); recovery does
// not use it.
package ownedcopy
