// Package jsbatch publishes atomic batches to a JetStream stream with
// compare-and-set on the stream's last sequence: the write primitive of the
// JetStream journal store, where a partition is one stream and its owner
// is its only writer.
//
//	p, err := jsbatch.New(nc, jsbatch.Config{})
//	ack, err := p.Publish(ctx, "P03", last, msgs)
//	var ce *jsbatch.ConflictError
//	switch {
//	case err == nil: // msgs are at ack.FirstSeq..ack.LastSeq
//	case errors.As(err, &ce): // someone else appended: re-read, decide
//	case errors.Is(err, jsbatch.ErrUnknownOutcome):
//		ack, err = p.Resolve(ctx, "P03", last, msgs) // did it land?
//	}
//
// Every error but ErrUnknownOutcome means that nothing of the batch
// landed. A timeout is not a failure.
//
// # The server's atomic batches
//
// nats.go 1.55 has no API for them; nats-server 2.15.2 takes them on a
// stream with AllowAtomicPublish. What follows was read in its code
// (stream.go processJetStreamAtomicBatchMsg, jetstream_batching.go
// checkMsgHeadersPreClusteredProposal) and is pinned by TestServerSemantics
// on a lone server and on three clustered servers:
//
//   - Every message carries Nats-Batch-Id (at most 64 bytes) and
//     Nats-Batch-Sequence 1..n; the last one Nats-Batch-Commit: 1. Any
//     other commit value abandons the batch at once (10200).
//   - The stream's leader stages messages as they come. A staged message
//     sent with a reply subject gets an empty reply; without one, none.
//     Refusals that can come before the commit: atomic publish disabled
//     (10174), more than 50 open batches on the stream or 1,000 on the
//     server (10210, on the first message), a batch sequence above 1,000
//     (10199), a gap or a batch the leader does not know (10176, the
//     batch is dropped). A batch not committed within 10 s of its last
//     message is dropped, and later messages of it get 10176.
//   - At the commit the leader checks every message's headers in order,
//     as one unit, against the stream plus what the batch put before it,
//     then proposes all of them in one Raft append: they land contiguous
//     and in order, or none does. Any refusal refuses the whole batch and
//     is the reply to the commit. The ack is
//     {"stream":S,"seq":LAST,"batch":ID,"count":N}.
//   - Nats-Expected-Last-Sequence belongs on the first message only: the
//     fence. It is compared with the leader's sequence counting proposals
//     not yet applied, so two batches racing on one fence cannot both
//     pass. Stale: 10071 "wrong last sequence: N" (N the leader's
//     sequence). On a later message it is compared with the batch's
//     running sequence, and even when it matches it is refused (10164).
//   - Nats-Expected-Last-Subject-Sequence is checked per message, against
//     the stream as it was before the batch; stale: 10071 with the
//     subject's sequence. A subject written earlier in the same batch
//     cannot be checked again (10164).
//   - Nats-Msg-Id: an id already in the stream's duplicate window, or
//     twice in the batch, refuses the whole batch (10201); there is no
//     duplicate ack as for single publishes. An id still being proposed
//     by another batch: 10158. Within one message the id is checked
//     before the fence; across messages, in order. So a retry of a
//     landed batch whose first message has an id gets 10201.
//   - Nats-Expected-Last-Msg-Id is not supported (10177);
//     Nats-Expected-Stream is (10060 when the subjects are another
//     stream's).
//   - The stored messages keep all their headers: the batch's
//     (Nats-Batch-Id, Nats-Batch-Sequence, Nats-Batch-Commit on the last;
//     about 65 bytes a message) and the expectations
//     (Nats-Expected-Last-Sequence and Nats-Expected-Stream on the first).
//     A reader can tell where a batch starts and ends.
//
// # After a timeout
//
// A commit without a reply may have landed, or may land later (the
// proposal can sit in the Raft log of a leader that is being replaced).
// Retrying the same batch with the same expected sequence and message ids
// is always safe: it lands once, or it is refused whole (10071 or 10201),
// and Resolve then tells whether the batch at expected+1 is this one by
// its first message's Nats-Msg-Id.
package jsbatch
