package jsbatch

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalid is wrapped by errors about a malformed call: an empty
	// batch, a message without a subject, two messages with one
	// Nats-Msg-Id, a header atomic batches do not support. Nothing was
	// sent.
	ErrInvalid = errors.New("jsbatch: invalid batch")
	// ErrTooLarge is wrapped when a batch has more messages than the
	// server takes in one batch (Config.MaxMessages, 1,000 by default), or
	// a message is over the connection's max payload; then nothing was
	// sent. The server's own refusals (10199, 10054) wrap it too.
	ErrTooLarge = errors.New("jsbatch: batch too large")
	// ErrInFlight is wrapped when the server refused the batch because
	// another append to the stream (or to a subject the batch checks) was
	// being proposed (10164 "wrong last sequence", no number), or a
	// message id of the batch was still being proposed by another batch
	// (10158). 10164 is also seen spuriously right after an ack. Nothing
	// landed: retry with the same expected sequence.
	ErrInFlight = errors.New("jsbatch: another append in flight")
	// ErrDuplicate is wrapped when a Nats-Msg-Id of the batch is already in
	// the stream's duplicate window (10201): the whole batch was refused.
	// With deterministic ids this means an earlier attempt of this batch
	// landed; Resolve finds where.
	ErrDuplicate = errors.New("jsbatch: message id already stored")
	// ErrIncomplete is wrapped when the server dropped the batch before
	// the commit (10176): a message was lost on the way (a reconnect), the
	// batch timed out (10 s from its first message) or was abandoned.
	// Nothing landed; retry.
	ErrIncomplete = errors.New("jsbatch: batch incomplete")
	// ErrTooManyBatches is wrapped when the stream already has the most
	// open batches the server allows (10210; 50 per stream, 1,000 per
	// server by default). Nothing landed; retry later.
	ErrTooManyBatches = errors.New("jsbatch: too many open batches")
	// ErrUnavailable is wrapped when the stream could not be reached before
	// the commit was sent (no responders, a timeout or a closed connection
	// on the first message, no stream leader). Nothing landed; retry once
	// a leader is elected (JetStream takes 4-9 s after a crash).
	ErrUnavailable = errors.New("jsbatch: stream unavailable")
	// ErrUnknownOutcome is wrapped, with the cause, when the commit was
	// sent but no reply came (timeout, lost connection, a reply that does
	// not parse). A timeout is not a failure: the batch may have landed,
	// or land later. Re-read the stream (Resolve, LastSequence) and
	// decide; retrying the same batch with the same expected sequence and
	// message ids is always safe.
	ErrUnknownOutcome = errors.New("jsbatch: outcome unknown")
	// ErrNotLanded is returned by Resolve when the stream's last sequence
	// is still the expected one: the batch has not landed (as of the
	// leader's state). Retry it with the same expected sequence and ids.
	ErrNotLanded = errors.New("jsbatch: batch not landed")
	// ErrNoStream is wrapped when the stream does not exist (10059).
	ErrNoStream = errors.New("jsbatch: no such stream")
)

// ConflictError reports that the stream's last sequence was not the
// expected one (10071): another writer appended, so nothing of the batch
// landed. The fence worked; the caller re-reads and decides.
type ConflictError struct {
	// Stream is the stream written to.
	Stream string
	// Expected is the sequence the batch expected.
	Expected uint64
	// Actual is the sequence the server saw, from its reply "wrong last
	// sequence: N", when ActualKnown. On a clustered stream it counts
	// proposals not yet committed, so it can run ahead of what a reader
	// sees. When messages carry Nats-Expected-Last-Subject-Sequence, a
	// conflict on one of them reports that subject's last sequence here.
	Actual      uint64
	ActualKnown bool
}

func (e *ConflictError) Error() string {
	if !e.ActualKnown {
		return fmt.Sprintf("jsbatch: stream %q: expected last sequence %d, not current", e.Stream, e.Expected)
	}
	return fmt.Sprintf("jsbatch: stream %q: expected last sequence %d, actual %d", e.Stream, e.Expected, e.Actual)
}

// ServerError is an error reply of the JetStream server. Errors of known
// meaning also wrap one of the sentinels above; errors.As finds the
// server's codes.
type ServerError struct {
	// Status is the HTTP-like status (400, 503, ...).
	Status int
	// Code is JetStream's err_code (10071, 10164, ...).
	Code int
	// Description is the server's text.
	Description string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("jetstream: %s (status %d, err_code %d)", e.Description, e.Status, e.Code)
}
