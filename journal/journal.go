package journal

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"
)

// Event is one recorded fact in a stream. On Append the caller fills Type,
// Payload and optionally ContentType, Tags and Metadata; the store assigns
// Stream, Sequence, Position and Time at commit.
type Event struct {
	// Stream is "<kind>/<id>".
	Stream string
	// Sequence is the event's position within its stream, from 1, gap-free.
	Sequence uint64
	// Partition is the partition of the log the event is in: the stream's
	// (Store.PartitionOf). A single node's log has one partition, 0.
	Partition int
	// Position is the event's position in its partition of the log, from
	// 1, strictly increasing in commit order. The Badger store's positions
	// are gap-free; the JetStream store's skip the sequences of its own
	// records (idempotency, snapshots, tombstones), so a difference of
	// positions is an upper bound of the events between them.
	Position uint64
	// Time is the commit time.
	Time time.Time
	// Type names the event, e.g. "Deposited".
	Type string
	// ContentType is the payload's encoding; empty means application/json.
	ContentType string
	// Payload is the encoded event.
	Payload []byte
	// Tags index the event in the global log; see Filter.Tag.
	Tags []string
	// Metadata holds free-form annotations (causation, correlation, ...).
	Metadata map[string]string
}

// ExpectAny disables the optimistic concurrency check of an append.
const ExpectAny = ^uint64(0)

// AppendRequest is one atomic append to one stream.
type AppendRequest struct {
	// Stream is "<kind>/<id>"; see ParseStream.
	Stream string
	// Expected is the stream's last sequence the caller decided on (0 for a
	// new stream), or ExpectAny. A mismatch fails with *ConflictError.
	Expected uint64
	// Events are appended atomically: all of them or none.
	Events []Event
	// IdempotencyKey, when set, is recorded with the events. A later append
	// to the same stream with the same key appends nothing and returns the
	// first append's result with Duplicate set and Reply as stored, even if
	// Expected no longer matches.
	IdempotencyKey string
	// Reply is stored with IdempotencyKey and returned on a repeat.
	Reply []byte
	// KeyUnused says that IdempotencyKey has never been used before (the
	// caller generated it at random and has not sent it before): a store
	// may skip looking it up. It is recorded all the same. A wrong
	// KeyUnused can record a key twice, so only the code that made the
	// key sets it.
	KeyUnused bool
}

// AppendResult describes a committed append.
type AppendResult struct {
	// FirstSequence and LastSequence bound the appended events in the stream.
	FirstSequence, LastSequence uint64
	// Partition is the stream's partition of the log; FirstPosition and
	// LastPosition bound the events in it.
	Partition                   int
	FirstPosition, LastPosition uint64
	// Duplicate reports that IdempotencyKey was seen before; the other
	// fields are those of the first append.
	Duplicate bool
	// Reply is the reply stored with the idempotency key (on a repeat).
	Reply []byte
}

// Token is the consistency token of the append's last event.
func (r AppendResult) Token() Token { return TokenAt(r.Partition, r.LastPosition) }

// Filter selects events of the log. The zero Filter selects all.
type Filter struct {
	// Kind selects the events of streams of one entity kind.
	Kind string
	// Tag selects the events carrying a tag. Kind and Tag are exclusive.
	Tag string
}

// StreamInfo describes a stream.
type StreamInfo struct {
	Stream string
	// LastSequence is the sequence of the stream's last event (0: empty).
	LastSequence uint64
	// Count is the number of events still stored (less than LastSequence
	// after deletion of events covered by a snapshot).
	Count uint64
	// First and Last are the commit times of the first and last events.
	First, Last time.Time
	// Tombstoned streams accept no more appends.
	Tombstoned bool
}

// Snapshot is the saved state of a stream as of Sequence.
type Snapshot struct {
	Stream   string
	Sequence uint64
	Time     time.Time
	Data     []byte
}

// Stats summarises a store.
type Stats struct {
	Streams uint64
	Events  uint64
	// Heads holds the last position of each partition, by partition.
	Heads []uint64
}

// Store is an event store. All methods are safe for concurrent use by many
// goroutines; Append calls from many goroutines are committed together (group
// commit) and each returns only once its events are durable per the store's
// sync policy. Iterators must be consumed (or stopped) before the store is
// closed; they read a consistent snapshot taken when iteration starts.
//
// The log is divided into Partitions() partitions: every stream belongs to
// one (PartitionOf), and each partition orders its events with strictly
// increasing positions (gap-free in the Badger store). There is no order
// between partitions. A single node's log has one partition; in a cluster
// each partition is a replicated stream.
type Store interface {
	// Append atomically appends events to one stream. If ctx ends before
	// the store has taken the append, nothing is written and ctx.Err() is
	// returned; once taken, Append reports the actual outcome. The store
	// may keep the events' payloads, tags and metadata after Append
	// returns (a cache of recent events, a local copy written behind):
	// the caller must not change them afterwards.
	Append(ctx context.Context, req AppendRequest) (AppendResult, error)
	// Read yields the events of a stream with Sequence >= from, in order,
	// at most limit of them (limit <= 0: no limit).
	Read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[Event, error]
	// Partitions is the number of partitions of the log, fixed for the
	// life of its data.
	Partitions() int
	// PartitionOf is the partition of a stream's events.
	PartitionOf(stream string) int
	// ReadAll yields the events of one partition of the log selected by f
	// with Position >= from, in order, at most limit (<= 0: no limit).
	// An event stays valid after the iteration moves on (a caller may
	// collect them), but its bytes may be shared with other readers: they
	// are not to be changed.
	ReadAll(ctx context.Context, partition int, from uint64, f Filter, limit int) iter.Seq2[Event, error]
	// Idempotent looks up an idempotency key of a stream: the result of the
	// append that recorded it (with Duplicate set and its Reply), or
	// ok=false. A stream's single writer checks it before deciding, so that
	// a repeated command returns its first reply without running again.
	Idempotent(ctx context.Context, stream, key string) (res AppendResult, ok bool, err error)
	// LastPosition is the position of the last committed event of a
	// partition (0: empty).
	LastPosition(partition int) uint64
	// WaitPosition blocks until the last position of a partition exceeds
	// after, or ctx ends, and returns the last position.
	WaitPosition(ctx context.Context, partition int, after uint64) (uint64, error)
	// Info describes one stream; an unknown stream has zero LastSequence.
	Info(ctx context.Context, stream string) (StreamInfo, error)
	// Streams yields the ids of the streams of one kind ("" for all), in
	// lexical order.
	Streams(ctx context.Context, kind string) iter.Seq2[string, error]
	// SaveSnapshot stores s as the stream's latest snapshot. s.Sequence
	// must be between 1 and the stream's last sequence (else ErrInvalid);
	// a snapshot older than the stored one is ignored; the store sets Time.
	SaveSnapshot(ctx context.Context, s Snapshot) error
	// LoadSnapshot returns the stream's latest snapshot, or ErrNotFound.
	LoadSnapshot(ctx context.Context, stream string) (Snapshot, error)
	// Tombstone closes a stream for good: later appends fail with
	// ErrTombstoned.
	Tombstone(ctx context.Context, stream string) error
	// Stats summarises the store.
	Stats(ctx context.Context) (Stats, error)
	// Close flushes and releases the store. It is idempotent; afterwards
	// methods return ErrClosed.
	Close() error
}

// Heads is the token of every partition's last position.
func Heads(s Store) Token {
	var t Token
	for p := range s.Partitions() {
		t = t.Merge(TokenAt(p, s.LastPosition(p)))
	}
	return t
}

// ErrNoPartition is wrapped by errors about a partition the log does not
// have.
var ErrNoPartition = fmt.Errorf("%w: no such partition", ErrInvalid)

var (
	// ErrClosed is returned by methods of a closed store.
	ErrClosed = errors.New("journal: closed")
	// ErrNotFound is returned when a snapshot does not exist.
	ErrNotFound = errors.New("journal: not found")
	// ErrTombstoned is returned by appends to a tombstoned stream.
	ErrTombstoned = errors.New("journal: stream tombstoned")
	// ErrInvalid is wrapped by errors about malformed input (stream ids,
	// empty appends, empty event types).
	ErrInvalid = errors.New("journal: invalid argument")
	// ErrReadOnly is returned by writes to a store opened read-only.
	ErrReadOnly = errors.New("journal: read-only")
)

// ConflictError reports a failed optimistic concurrency check.
type ConflictError struct {
	Stream   string
	Expected uint64
	Actual   uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("journal: conflict on stream %q: expected sequence %d, actual %d", e.Stream, e.Expected, e.Actual)
}

// TooLargeError reports an event, append or snapshot over the store's size
// limit.
type TooLargeError struct {
	Stream string
	// Index is the offending event's index in the append, or -1 when the
	// whole append (or a snapshot) is over its limit.
	Index int
	Size  int
	Limit int
}

func (e *TooLargeError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("journal: write to stream %q is %d bytes, over the limit of %d", e.Stream, e.Size, e.Limit)
	}
	return fmt.Sprintf("journal: event %d of stream %q is %d bytes, over the limit of %d", e.Index, e.Stream, e.Size, e.Limit)
}

// CorruptError reports stored bytes that do not decode.
type CorruptError struct {
	Stream   string
	Sequence uint64
	Position uint64
	Err      error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("journal: corrupt event at stream %q sequence %d (position %d): %v", e.Stream, e.Sequence, e.Position, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// ErrNotOwner is matched (errors.Is) by the errors of writes to a
// partition this store does not own: *NotOwnerError and *FencedError. Such
// a write did not happen; the caller forwards it to the owner or retries
// once ownership is settled.
var ErrNotOwner = errors.New("journal: not the partition's owner")

// ErrFenced is matched (errors.Is) by *FencedError; it wraps ErrNotOwner.
var ErrFenced = fmt.Errorf("%w: fenced by a newer owner", ErrNotOwner)

// NotOwnerError reports a write to a partition the store has not acquired
// (a store that requires ownership, such as the JetStream store in a
// cluster). Nothing was written.
type NotOwnerError struct {
	Partition int
}

func (e *NotOwnerError) Error() string {
	return fmt.Sprintf("journal: partition %d is not owned here (not acquired, or released)", e.Partition)
}

// Is makes errors.Is(err, ErrNotOwner) hold.
func (e *NotOwnerError) Is(target error) bool { return target == ErrNotOwner }

// FencedError reports that another owner took a partition over (a newer
// epoch's takeover marker, or another writer's records, moved the fence
// of the replicated log) while this store held it: the write that found
// out did not happen, and the store no longer owns the partition. It
// matches ErrFenced and ErrNotOwner.
type FencedError struct {
	Partition int
	// Epoch is the epoch this store held the partition under.
	Epoch uint64
	// By is the holder named by the newer takeover marker ("" if unknown).
	By string
	// ByEpoch is the newer marker's epoch (0 if unknown).
	ByEpoch uint64
}

func (e *FencedError) Error() string {
	by := "another writer"
	if e.By != "" {
		by = fmt.Sprintf("%q", e.By)
	}
	if e.ByEpoch != 0 {
		by += fmt.Sprintf(" at epoch %d", e.ByEpoch)
	}
	return fmt.Sprintf("journal: partition %d: fenced: %s took it over from epoch %d; the write did not happen", e.Partition, by, e.Epoch)
}

// Is makes errors.Is(err, ErrFenced) and errors.Is(err, ErrNotOwner) hold.
func (e *FencedError) Is(target error) bool { return target == ErrFenced || target == ErrNotOwner }

// ErrUnavailable is matched (errors.Is) by the errors of a store whose
// storage did not answer for now (a replicated log electing a leader):
// nothing was written; retry.
var ErrUnavailable = errors.New("journal: the store's storage is not answering for now")

// ErrUnknownOutcome is matched (errors.Is) by *UnknownOutcomeError.
var ErrUnknownOutcome = errors.New("journal: outcome unknown")

// UnknownOutcomeError reports a write whose outcome the store could not
// learn (the replicated log's leader did not answer, and could not be
// asked afterwards): it may have happened or not. It is retryable: repeat
// it with the same idempotency key (or re-read the stream and decide).
type UnknownOutcomeError struct {
	Stream    string
	Partition int
	Err       error
}

func (e *UnknownOutcomeError) Error() string {
	return fmt.Sprintf("journal: write to stream %q (partition %d): outcome unknown, it may or may not have happened (retry with the same idempotency key): %v", e.Stream, e.Partition, e.Err)
}

// Is makes errors.Is(err, ErrUnknownOutcome) hold.
func (e *UnknownOutcomeError) Is(target error) bool { return target == ErrUnknownOutcome }

func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// StreamID joins a kind and an id into a stream id.
func StreamID(kind, id string) string { return kind + "/" + id }

// ParseStream splits a stream id into kind and id and validates both: the
// kind is non-empty and has no '/', the id is non-empty, and neither holds a
// NUL byte or is longer than 1024 bytes.
func ParseStream(stream string) (kind, id string, err error) {
	kind, id, ok := strings.Cut(stream, "/")
	switch {
	case stream == "":
		return "", "", fmt.Errorf("%w: empty stream id", ErrInvalid)
	case !ok || kind == "":
		return "", "", fmt.Errorf("%w: stream id %q is not <kind>/<id>", ErrInvalid, stream)
	case id == "":
		return "", "", fmt.Errorf("%w: stream id %q has an empty id", ErrInvalid, stream)
	case len(stream) > 1024:
		return "", "", fmt.Errorf("%w: stream id of %d bytes is over 1024", ErrInvalid, len(stream))
	case strings.IndexByte(stream, 0) >= 0:
		return "", "", fmt.Errorf("%w: stream id %q holds a NUL byte", ErrInvalid, stream)
	}
	return kind, id, nil
}
