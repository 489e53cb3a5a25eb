// Package jsstore is the JetStream journal store, a cluster's journal: a
// journal.Store whose partitions are replicated JetStream streams (ADR
// 0010), one per shard in a cluster (cluster/node, ADR 0014), each written
// only by its owner, every append fenced by the stream's expected last
// sequence.
//
// Store passes the journal conformance suite on one server and on three
// servers with three replicas (store_test.go). A committer per partition groups the appends of many entities
// into one atomic batch (internal/jsbatch) fenced by the stream's last
// sequence (commit.go), and on a busy partition gathers the next batch a
// little (ADR 0022); an unknown outcome is resolved by asking the
// stream's leader. Read and ReadAll take batches of direct gets, which any
// replica may answer, checked against a position known to be committed
// and completed from the leader when the replica lags (store.go scan,
// internal/jsread, ADR 0011 "Reads"); every other read asks the leader.
// The node's local copy of its partitions' events and snapshots wraps a
// Store (journal/jsstore/ownedcopy; Holds and ReadFrom serve it). The
// journal's layout (its number of partitions) is recorded on first open
// and checked by every later one (layout.go). Partitions this Store does
// not own are watched, so that LastPosition and WaitPosition follow other
// nodes' appends (watch.go). bench_test.go measures the store beside the
// raw ceilings (docs/benchmarks.md, "JetStream ceilings").
//
//	st, err := jsstore.Open(ctx, jsstore.Config{Conn: nc, Partitions: 16, Replicas: 3})
//	res, err := st.Append(ctx, journal.AppendRequest{Stream: "account/1", Events: evs})
//
// # Ownership
//
// In a cluster the holder of a shard's lease is the only writer of its
// partition. With Config.RequireOwnership, writes to a partition fail
// with *journal.NotOwnerError until the Store acquires it under the
// lease's epoch; Acquire appends a takeover marker fenced by the stream's
// last sequence, so the previous owner's next write fails with
// *journal.FencedError (it did not happen; Config.OnFenced is told).
//
//	fence, err := st.Acquire(ctx, shard, lease.Epoch, nodeID)
//	...
//	var fe *journal.FencedError
//	if errors.As(err, &fe) { /* lost the shard: stop serving it */ }
//	st.Release(shard) // on a handoff
package jsstore
