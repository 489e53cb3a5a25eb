package jsbatch

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// JetStream err_codes this package gives a meaning to (nats-server
// errors.json).
const (
	codeStreamNotFound   = 10059
	codeStreamNotMatch   = 10060 // Nats-Expected-Stream: the subjects are another stream's
	codeWrongLastSeq     = 10071 // "wrong last sequence: N"
	codeMsgTooBig        = 10054
	codeDupInProcess     = 10158 // "duplicate message id is in process"
	codeWrongLastSeqBusy = 10164 // "wrong last sequence", no number
	codeIncomplete       = 10176
	codeBatchTooLarge    = 10199
	codeBatchDuplicate   = 10201
	codeTooManyInflight  = 10210
	codeClusterNotAvail  = 10008
	codeNotLeader        = 10009
	codeInsufficientRes  = 10023
	codeSeqNotMatch      = 10063 // sent while applying a proposal
	codeStoreFailed      = 10077 // also sent while applying
)

// wrongLastSeqPrefix starts the description of err_code 10071.
const wrongLastSeqPrefix = "wrong last sequence: "

// reply is the JSON the server answers a batch's message with: empty for
// a staged message, a publish ack with batch and count for the commit, or
// an error. Unknown fields (domain, val) are ignored.
type reply struct {
	Stream    string    `json:"stream"`
	Seq       uint64    `json:"seq"`
	Batch     string    `json:"batch"`
	Count     uint64    `json:"count"`
	Duplicate bool      `json:"duplicate"`
	Error     *apiError `json:"error"`
}

type apiError struct {
	Status      int    `json:"code"`
	Code        int    `json:"err_code"`
	Description string `json:"description"`
}

// parseStaged reads the server's reply to a message before the commit:
// empty when the message was staged, else an error. Nothing has landed
// either way.
func parseStaged(data []byte, stream string, expected uint64) error {
	if len(data) == 0 {
		return nil
	}
	var r reply
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%w: unreadable reply to a staged message: %v", ErrUnavailable, err)
	}
	if r.Error == nil {
		return fmt.Errorf("%w: unexpected reply to a staged message: %.200q", ErrUnavailable, data)
	}
	return replyError(r.Error, stream, expected, false)
}

// parseCommit reads the server's reply to the commit of a batch of n
// messages with the given id, published to stream with the expected last
// sequence. A reply that does not say clearly what happened is an unknown
// outcome.
func parseCommit(data []byte, stream, batchID string, n int, expected uint64) (Ack, error) {
	var r reply
	if err := json.Unmarshal(data, &r); err != nil {
		return Ack{}, fmt.Errorf("%w: unreadable reply to the commit: %v", ErrUnknownOutcome, err)
	}
	if r.Error != nil {
		return Ack{}, replyError(r.Error, stream, expected, true)
	}
	switch {
	case r.Stream != stream:
		return Ack{}, fmt.Errorf("%w: commit acknowledged by stream %q, want %q", ErrUnknownOutcome, r.Stream, stream)
	case r.Batch != batchID || r.Count != uint64(n):
		return Ack{}, fmt.Errorf("%w: commit ack for batch %q of %d, want %q of %d", ErrUnknownOutcome, r.Batch, r.Count, batchID, n)
	case r.Duplicate:
		// Atomic batches refuse duplicates (10201); only fast batches ack them.
		return Ack{}, fmt.Errorf("%w: commit acknowledged as a duplicate", ErrDuplicate)
	case r.Seq != expected+uint64(n):
		// The first message was fenced at expected, and a batch is
		// contiguous: any other last sequence means the server is not
		// doing what we rely on.
		return Ack{}, fmt.Errorf("%w: commit ack at sequence %d, want %d", ErrUnknownOutcome, r.Seq, expected+uint64(n))
	}
	return Ack{Stream: stream, FirstSeq: expected + 1, LastSeq: r.Seq}, nil
}

// replyError turns a JetStream error reply into this package's errors.
// The checks that refuse a batch run before the leader proposes it, so
// their errors mean that nothing landed. Two errors can also be sent while
// a replica applies a committed proposal (a sequence mismatch, a failed
// store write); to a commit they are an unknown outcome.
func replyError(e *apiError, stream string, expected uint64, commit bool) error {
	se := &ServerError{Status: e.Status, Code: e.Code, Description: e.Description}
	switch e.Code {
	case codeSeqNotMatch, codeStoreFailed:
		if commit {
			return fmt.Errorf("%w: %w", ErrUnknownOutcome, se)
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, se)
	case codeWrongLastSeq:
		ce := &ConflictError{Stream: stream, Expected: expected}
		if rest, ok := strings.CutPrefix(e.Description, wrongLastSeqPrefix); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 64); err == nil {
				ce.Actual, ce.ActualKnown = n, true
			}
		}
		return ce
	case codeWrongLastSeqBusy, codeDupInProcess:
		return fmt.Errorf("%w: %w", ErrInFlight, se)
	case codeBatchDuplicate:
		return fmt.Errorf("%w: %w", ErrDuplicate, se)
	case codeIncomplete:
		return fmt.Errorf("%w: %w", ErrIncomplete, se)
	case codeTooManyInflight:
		return fmt.Errorf("%w: %w", ErrTooManyBatches, se)
	case codeBatchTooLarge, codeMsgTooBig:
		return fmt.Errorf("%w: %w", ErrTooLarge, se)
	case codeStreamNotFound:
		return fmt.Errorf("%w: %w", ErrNoStream, se)
	case codeStreamNotMatch:
		return fmt.Errorf("%w: the subjects are not stream %q's: %w", ErrInvalid, stream, se)
	case codeClusterNotAvail, codeNotLeader, codeInsufficientRes:
		return fmt.Errorf("%w: %w", ErrUnavailable, se)
	}
	return se
}
