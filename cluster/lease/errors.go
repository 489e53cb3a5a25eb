package lease

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidName is returned (wrapped, with the reason) for a lease name
// that is empty or not valid as a KV key, and for an empty holder.
var ErrInvalidName = errors.New("lease: invalid name")

// ErrInvalidLease is returned by Renew, Release and Keep for a Lease value
// that no Acquire returned (a zero epoch or revision, a missing holder).
var ErrInvalidLease = errors.New("lease: invalid lease")

// ErrLost matches every *LostError (errors.Is): the lease is no longer
// ours.
var ErrLost = errors.New("lease: lost")

// ErrUnavailable is returned (wrapped, with the last cause) when the
// bucket did not answer within the configured attempts. The outcome of the
// write is unknown: it may still be applied later. A lease that was being
// renewed stays valid until its Expires and no longer.
var ErrUnavailable = errors.New("lease: the bucket did not answer; outcome unknown")

// ErrContended is returned by Acquire when every round lost a
// compare-and-set to another writer without a winner becoming visible
// (stale reads during a leader change, or a storm of contenders). Retrying
// later is safe.
var ErrContended = errors.New("lease: contended")

// ErrClosed is returned by Keeper.Err after Close.
var ErrClosed = errors.New("lease: keeper closed")

// HeldError is returned by Acquire when another holder owns the lease.
type HeldError struct {
	Name   string // the lease
	Holder string // its current holder
	Epoch  uint64 // the holder's epoch
	// ExpiresIn is how long the entry lives unless renewed, from the
	// server's write time, the entry's TTL and this machine's clock: a hint
	// for when to try again, never a promise (the read may be stale, and
	// the holder renews).
	ExpiresIn time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lease: %q is held by %q (epoch %d); it expires in %s unless renewed",
		e.Name, e.Holder, e.Epoch, e.ExpiresIn.Round(time.Millisecond))
}

// LostReason says why a lease was lost.
type LostReason int

const (
	// Superseded: a newer write replaced ours (a takeover, a release, or
	// the server's expiry marker). The compare-and-set on our revision
	// failed, so nothing was changed.
	Superseded LostReason = iota + 1
	// Expired: the lease's deadline (Lease.Expires) passed before a
	// renewal was confirmed. The holder must already have stopped acting
	// as owner.
	Expired
)

func (r LostReason) String() string {
	switch r {
	case Superseded:
		return "superseded"
	case Expired:
		return "expired"
	default:
		return fmt.Sprintf("LostReason(%d)", int(r))
	}
}

// LostError is returned by Renew and Release, and reported by a Keeper,
// when a lease is no longer ours. errors.Is(err, ErrLost) matches it.
type LostError struct {
	Name   string // the lease
	Holder string // the holder that lost it
	Epoch  uint64 // the epoch that ended
	Reason LostReason
	// Revision is the revision found in place of ours (Superseded), when
	// the server said it; 0 when unknown.
	Revision uint64
	// Err is the last failure before the deadline passed (Expired), if
	// any.
	Err error
}

func (e *LostError) Error() string {
	s := fmt.Sprintf("lease: %q epoch %d of %q lost: %s", e.Name, e.Epoch, e.Holder, e.Reason)
	if e.Revision != 0 {
		s += fmt.Sprintf(" (revision %d now)", e.Revision)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrLost) true.
func (e *LostError) Is(target error) bool { return target == ErrLost }

func (e *LostError) Unwrap() error { return e.Err }
