package badgerstore

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// SyncPolicy says when appended events are forced to disk.
type SyncPolicy int

const (
	// SyncAlways acknowledges an append only after the data is fsynced.
	// Concurrent appends share one write and one sync (group commit).
	SyncAlways SyncPolicy = iota
	// SyncInterval acknowledges an append once it is written to Badger
	// (visible to the OS, so it survives a crash of the process) and fsyncs
	// every SyncInterval; a power loss can lose the last interval.
	SyncInterval
	// SyncNone never fsyncs explicitly (Badger syncs when it flushes a
	// memtable, and on Close). For tests and rebuildable data.
	SyncNone
)

// String returns "always", "interval" or "none".
func (p SyncPolicy) String() string {
	switch p {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// Set parses "always", "interval" or "none" into p, so that a SyncPolicy
// is a command-line flag value (pflag.Value and flag.Value).
func (p *SyncPolicy) Set(s string) error {
	v, err := ParseSyncPolicy(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Type names the flag's value type in help texts.
func (*SyncPolicy) Type() string { return "always|interval|none" }

// ParseSyncPolicy parses "always", "interval" or "none".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	for _, p := range []SyncPolicy{SyncAlways, SyncInterval, SyncNone} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("badgerstore: unknown sync policy %q (want always, interval or none)", s)
}

// memTableSize is Badger's memtable size. A variable only so that the crash
// test can make Badger rotate memtables and flush tables often.
var memTableSize int64 = 64 << 20

// groupBytes caps the estimated size of one commit: one commit must fit in
// one Badger transaction, whose size Badger caps at 15% of the memtable.
func groupBytes() int { return int(memTableSize * 12 / 100) }

// Limits that come from Badger.
const (
	// groupEntries caps the entries of one commit (Badger allows ~100k).
	groupEntries = 50_000
	// maxAppendBytesLimit is the largest MaxAppendBytes we accept: an append
	// must fit in a commit with room for its index entries.
	maxAppendBytesLimit = 6 << 20
)

// Config configures a Store. The zero value of every field means its
// default; only Dir is required.
type Config struct {
	// Dir is the Badger directory. Required.
	Dir string

	// Sync is the sync policy; the default, SyncAlways, acknowledges an
	// append only after an fsync covers it.
	Sync SyncPolicy
	// SyncInterval is the fsync period under SyncInterval. Default 10 ms
	// (DefaultSyncInterval): the most a power loss can take.
	SyncInterval time.Duration

	// MaxEventSize caps the encoded size of one event (type, tags,
	// metadata and payload, plus a few bytes of framing). Default 1 MiB.
	MaxEventSize int
	// MaxAppendEvents caps the number of events in one append. Default
	// 10,000.
	MaxAppendEvents int
	// MaxAppendBytes caps the encoded size of one append (events and
	// reply). Default 4 MiB; at most 6 MiB, since an append is committed
	// in one Badger transaction.
	MaxAppendBytes int
	// MaxSnapshotSize caps the data of one snapshot. Default 4 MiB; at
	// most 6 MiB, for the same reason.
	MaxSnapshotSize int

	// EncryptionKey, when set, encrypts the data at rest with AES (16, 24
	// or 32 bytes: AES-128, -192 or -256). The same key must be given on
	// every open. Badger requires a block index cache with encryption, so
	// IndexCacheSize then defaults to 64 MiB.
	EncryptionKey []byte
	// IndexCacheSize is Badger's index cache in bytes. Default 0 (indexes
	// kept in memory), or 64 MiB when EncryptionKey is set.
	IndexCacheSize int64

	// ReadOnly opens an existing store for reading only: writes fail with
	// journal.ErrReadOnly. Badger refuses it while another process has the
	// directory open for writing.
	ReadOnly bool
	// RecoverReadOnly, with ReadOnly, lets Open recover a store that was
	// not closed cleanly (a killed node) before opening it read-only:
	// Badger must replay and truncate its write-ahead log, which writes to
	// the directory, so Open does one read-write open and close first. It
	// is what the node would do on its next start, and it needs the
	// directory to be writable and unused. Without it such an open fails
	// with ErrNeedsRecovery.
	RecoverReadOnly bool

	// DeleteCoveredEvents deletes a stream's events up to the sequence of
	// each snapshot saved for it. Off by default: the log is then no longer
	// complete (Read starts after the snapshot, ReadAll skips the deleted
	// positions), but the stream's sequence numbers carry on.
	DeleteCoveredEvents bool

	// IdempotencyTTL is how long an idempotency record is kept. Default 0:
	// for ever.
	IdempotencyTTL time.Duration

	// StreamCacheSize bounds the number of stream heads (last sequence,
	// tombstone flag) the committer keeps in memory; a miss costs a Badger
	// lookup on the commit path. Default 100,000.
	StreamCacheSize int

	// Logger receives the store's and Badger's logs (the latter with
	// component=badger). Default: discarded.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultSyncInterval    = 10 * time.Millisecond
	DefaultMaxEventSize    = 1 << 20
	DefaultMaxAppendEvents = 10_000
	DefaultMaxAppendBytes  = 4 << 20
	DefaultMaxSnapshotSize = 4 << 20
	DefaultStreamCacheSize = 100_000
	encryptedIndexCache    = 64 << 20
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.MaxEventSize == 0 {
		c.MaxEventSize = DefaultMaxEventSize
	}
	if c.MaxAppendEvents == 0 {
		c.MaxAppendEvents = DefaultMaxAppendEvents
	}
	if c.MaxAppendBytes == 0 {
		c.MaxAppendBytes = max(DefaultMaxAppendBytes, c.MaxEventSize)
	}
	if c.MaxSnapshotSize == 0 {
		c.MaxSnapshotSize = DefaultMaxSnapshotSize
	}
	if c.StreamCacheSize == 0 {
		c.StreamCacheSize = DefaultStreamCacheSize
	}
	if c.IndexCacheSize == 0 && len(c.EncryptionKey) > 0 {
		c.IndexCacheSize = encryptedIndexCache
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every invalid field, joined into one error
// (errors.Join), so that one run shows all the mistakes.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if c.Sync < SyncAlways || c.Sync > SyncNone {
		errs = append(errs, fmt.Errorf("unknown Sync %d", int(c.Sync)))
	}
	if c.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("negative SyncInterval %v", c.SyncInterval))
	}
	if c.MaxEventSize < 0 || c.MaxAppendEvents < 0 || c.MaxAppendBytes < 0 || c.MaxSnapshotSize < 0 || c.StreamCacheSize < 0 || c.IndexCacheSize < 0 || c.IdempotencyTTL < 0 {
		errs = append(errs, errors.New("negative limit"))
	}
	if c.MaxAppendBytes > maxAppendBytesLimit {
		errs = append(errs, fmt.Errorf("MaxAppendBytes %d over %d", c.MaxAppendBytes, maxAppendBytesLimit))
	}
	if c.MaxSnapshotSize > maxAppendBytesLimit {
		errs = append(errs, fmt.Errorf("MaxSnapshotSize %d over %d", c.MaxSnapshotSize, maxAppendBytesLimit))
	}
	if c.MaxEventSize > c.MaxAppendBytes {
		errs = append(errs, fmt.Errorf("MaxEventSize %d over MaxAppendBytes %d", c.MaxEventSize, c.MaxAppendBytes))
	}
	switch len(c.EncryptionKey) {
	case 0, 16, 24, 32:
	default:
		errs = append(errs, fmt.Errorf("EncryptionKey of %d bytes (want 16, 24 or 32)", len(c.EncryptionKey)))
	}
	if len(c.EncryptionKey) > 0 && c.IndexCacheSize == 0 {
		errs = append(errs, errors.New("IndexCacheSize must be set with EncryptionKey"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("badgerstore: invalid config: %w", err)
	}
	return nil
}
