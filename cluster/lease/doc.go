// Package lease grants leases with fencing epochs on a replicated
// JetStream KV bucket. A shard or a singleton is owned by whoever holds its
// lease; the lease's epoch (the bucket revision that granted it) is the
// fencing token that the owner's writes carry, so a stale owner's writes
// can be refused. The lease decides, membership informs: serf's failure
// detection only lets a contender take a dead holder's lease early
// (TakeOver), still by compare-and-set.
//
// Every decision is a compare-and-set write on the key's last revision
// (Nats-Expected-Last-Subject-Sequence), never a read: reads may be stale
// and only choose what to expect. Each entry carries a per-message TTL
// (Nats-TTL; the bucket allows them), so a holder that stops renewing
// loses the lease when the server expires the entry; renewals publish a
// new entry with the TTL, because kv.Update would drop it. A write that
// times out is not a failure: it is re-read and resent under the same
// message id (deduplicated by the server), a bounded number of times.
//
// The holder stops acting as owner at Lease.Expires, which is TTL minus
// Config.Margin after the start of the write that granted or renewed the
// lease, by this process's monotonic clock; the server cannot expire the
// entry before TTL after it stored it. docs/adr/0013-leases.md explains the
// defaults (TTL 15 s, renewals every 3 s, margin 1 s).
//
// Usage, with a JetStream client js of the cluster:
//
//	store, err := lease.Open(ctx, js, lease.Config{})
//	l, err := store.Acquire(ctx, "shard.17", "node-a")
//	var held *lease.HeldError
//	if errors.As(err, &held) { ... retry after held.ExpiresIn ... }
//	k, err := store.Keep(l) // renews in the background
//	defer k.Close()         // releases
//	for {
//		select {
//		case <-k.Done(): // lost: k.Err() says why; stop owning
//		...
//		}
//		if l, ok := k.Lease(); ok { write(fenced by l.Epoch) }
//	}
package lease
