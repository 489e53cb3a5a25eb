// Package codes is Troupe's error contract: the one place where the errors
// of the runtime and the journal become the codes every transport shows a
// client. The Connect API (HTTP, gRPC, gRPC-Web), NATS command requests and
// commands forwarded between nodes all use it, so the same mistake gets the
// same code and message whichever way a command arrives.
//
//	code := codes.Of(err)          // codes.FailedPrecondition for a rejection
//	if code.Retryable() { ... }    // overload, shutdown, a shard that moves
//
// The names are those of gRPC's status codes, in snake case ("not_found"),
// as Connect writes them in JSON error bodies.
package codes

import (
	"context"
	"errors"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
)

// Code classifies an error for clients.
type Code int

// The codes, with what they mean for a client of Troupe.
const (
	// Unknown: an error this contract does not classify (treat as Internal).
	Unknown Code = iota
	// InvalidArgument: the request is malformed: an unknown kind, command
	// or query, a missing field, a payload that does not decode, an event
	// or append over the size limits. Do not retry.
	InvalidArgument
	// FailedPrecondition: the entity refused the command (a domain
	// rejection, a plugin's rejection, a tombstoned stream). Do not retry
	// the same command.
	FailedPrecondition
	// PermissionDenied: the command is internal (only the node sends it).
	PermissionDenied
	// NotFound: the entity, query target or projection does not exist.
	NotFound
	// ResourceExhausted: the entity's mailbox is full. Retry later.
	ResourceExhausted
	// Aborted: a concurrent writer changed the stream first. Retry.
	Aborted
	// DeadlineExceeded: the deadline passed first. A command may still
	// have been applied: retry with the same idempotency key.
	DeadlineExceeded
	// OutOfRange: a query waited for a position beyond the log's end.
	OutOfRange
	// Unavailable: the node is stopping, or the entity's shard has no
	// owner at the moment. Retry, with the same idempotency key.
	Unavailable
	// Canceled: the caller gave up.
	Canceled
	// Internal: a bug or an unexpected failure.
	Internal
)

var names = [...]string{
	Unknown:            "unknown",
	InvalidArgument:    "invalid_argument",
	FailedPrecondition: "failed_precondition",
	PermissionDenied:   "permission_denied",
	NotFound:           "not_found",
	ResourceExhausted:  "resource_exhausted",
	Aborted:            "aborted",
	DeadlineExceeded:   "deadline_exceeded",
	OutOfRange:         "out_of_range",
	Unavailable:        "unavailable",
	Canceled:           "canceled",
	Internal:           "internal",
}

// String returns the code's wire name, e.g. "failed_precondition".
func (c Code) String() string {
	if c < 0 || int(c) >= len(names) {
		return "unknown"
	}
	return names[c]
}

// Parse returns the code of a wire name, or Unknown.
func Parse(s string) Code {
	for c, n := range names {
		if n == s {
			return Code(c)
		}
	}
	return Unknown
}

// Retryable reports whether the same request (with the same idempotency
// key, for a command) may succeed when sent again.
func (c Code) Retryable() bool {
	switch c {
	case ResourceExhausted, Aborted, DeadlineExceeded, Unavailable:
		return true
	}
	return false
}

// Error is an error that carries its code: what a node receives from
// another node that served a forwarded command, so that the client sees
// the owner's code and message unchanged.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Of classifies err; nil is not an error and gives Unknown.
func Of(err error) Code {
	var (
		coded       *Error
		unknownKind *actors.UnknownKindError
		unknownCmd  *actors.UnknownCommandError
		unknownQ    *actors.UnknownQueryError
		decode      *actors.DecodeError
		rejected    *actors.RejectedError
		notFound    *actors.NotFoundError
		full        *actors.MailboxFullError
		posTimeout  *actors.PositionTimeoutError
		unknownProj *actors.UnknownProjectionError
		internalCmd *actors.InternalCommandError
		notOwner    *actors.NotOwnerError
		tooLarge    *journal.TooLargeError
		conflict    *journal.ConflictError
	)
	switch {
	case err == nil:
		return Unknown
	case errors.As(err, &coded):
		return coded.Code
	case errors.As(err, &unknownKind), errors.As(err, &unknownCmd), errors.As(err, &unknownQ),
		errors.As(err, &decode), errors.Is(err, journal.ErrInvalid), errors.As(err, &tooLarge):
		return InvalidArgument
	case errors.As(err, &rejected), errors.Is(err, journal.ErrTombstoned):
		return FailedPrecondition
	case errors.As(err, &internalCmd):
		return PermissionDenied
	case errors.As(err, &notFound), errors.As(err, &unknownProj):
		return NotFound
	case errors.As(err, &full):
		return ResourceExhausted
	case errors.As(err, &conflict):
		return Aborted
	case errors.As(err, &posTimeout):
		if posTimeout.Want > posTimeout.Head {
			return OutOfRange
		}
		return DeadlineExceeded
	case errors.As(err, &notOwner), errors.Is(err, actors.ErrClosed), errors.Is(err, journal.ErrClosed),
		errors.Is(err, journal.ErrNotOwner), errors.Is(err, journal.ErrUnavailable):
		return Unavailable
	case errors.Is(err, journal.ErrUnknownOutcome):
		return DeadlineExceeded // the write may have happened: as a timeout
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Canceled
	}
	return Internal
}
