package codes_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/codes"
	"github.com/troupe-dev/troupe/journal"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"unknown kind", &actors.UnknownKindError{Kind: "k"}, codes.InvalidArgument},
		{"unknown command", &actors.UnknownCommandError{Kind: "k", Type: "T"}, codes.InvalidArgument},
		{"unknown query", &actors.UnknownQueryError{Name: "q"}, codes.InvalidArgument},
		{"decode", &actors.DecodeError{Kind: "k", Type: "T", Err: fmt.Errorf("x")}, codes.InvalidArgument},
		{"invalid stream", fmt.Errorf("append: %w", journal.ErrInvalid), codes.InvalidArgument},
		{"too large", &journal.TooLargeError{Stream: "k/i", Index: -1}, codes.InvalidArgument},
		{"rejected", fmt.Errorf("wrapped: %w", &actors.RejectedError{Reason: "no"}), codes.FailedPrecondition},
		{"tombstoned", journal.ErrTombstoned, codes.FailedPrecondition},
		{"internal command", &actors.InternalCommandError{Kind: "k", Type: "T"}, codes.PermissionDenied},
		{"not found", &actors.NotFoundError{What: "account a"}, codes.NotFound},
		{"unknown projection", &actors.UnknownProjectionError{Name: "p"}, codes.NotFound},
		{"mailbox full", &actors.MailboxFullError{Stream: "k/i", Size: 1}, codes.ResourceExhausted},
		{"conflict", &journal.ConflictError{Stream: "k/i"}, codes.Aborted},
		{"position not reached", &actors.PositionTimeoutError{Want: 5, Reached: 3, Head: 9}, codes.DeadlineExceeded},
		{"position beyond the log", &actors.PositionTimeoutError{Want: 50, Reached: 3, Head: 9}, codes.OutOfRange},
		{"not owner", &actors.NotOwnerError{Kind: "k", ID: "i", Shard: 3}, codes.Unavailable},
		{"runtime closed", actors.ErrClosed, codes.Unavailable},
		{"journal closed", journal.ErrClosed, codes.Unavailable},
		{"journal not the owner", &journal.NotOwnerError{Partition: 2}, codes.Unavailable},
		{"journal unavailable", fmt.Errorf("read: %w", journal.ErrUnavailable), codes.Unavailable},
		{"journal fenced", &journal.FencedError{Partition: 2, Epoch: 3}, codes.Unavailable},
		{"journal outcome unknown", &journal.UnknownOutcomeError{Stream: "k/i", Err: errors.New("timeout")}, codes.DeadlineExceeded},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded},
		{"canceled", context.Canceled, codes.Canceled},
		{"remote", fmt.Errorf("forward: %w", &codes.Error{Code: codes.NotFound, Message: "m"}), codes.NotFound},
		{"anything else", fmt.Errorf("disk on fire"), codes.Internal},
		{"nil", nil, codes.Unknown},
	} {
		if got := codes.Of(tc.err); got != tc.want {
			t.Errorf("%s: Of(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestNamesRoundTrip(t *testing.T) {
	for c := codes.Unknown; c <= codes.Internal; c++ {
		if got := codes.Parse(c.String()); got != c {
			t.Errorf("Parse(%q) = %v, want %v", c.String(), got, c)
		}
	}
	if codes.Parse("bogus") != codes.Unknown || codes.Code(99).String() != "unknown" {
		t.Error("unknown names and codes must map to unknown")
	}
	if !codes.Unavailable.Retryable() || codes.FailedPrecondition.Retryable() {
		t.Error("Retryable: unavailable must be, failed_precondition must not")
	}
}
