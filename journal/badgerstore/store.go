package badgerstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore/internal/codec"
)

// formatVersion is the on-disk format this package writes and reads.
const formatVersion = 1

// Store is a journal.Store on Badger. See the package doc.
type Store struct {
	cfg Config
	db  *badger.DB
	log *slog.Logger

	// mu guards the intake queue and closing (lock order: mu before rmu;
	// neither is held while calling Badger).
	mu      sync.Mutex
	queue   []*op
	closing bool
	wake    chan struct{} // cap 1: "the queue is not empty"

	// failed holds the error that stopped the committer for good (a failed
	// commit or sync leaves Badger's state unknown).
	failed atomic.Pointer[error]

	// lastPos is the last acknowledged global position; notify is closed
	// and replaced whenever it advances.
	lastPos atomic.Uint64
	notify  atomic.Pointer[chan struct{}]
	// stats are the counters as of lastPos.
	stats atomic.Pointer[codec.Stats]

	// rmu guards the count of running read iterators; Close waits for it
	// to fall to zero before closing Badger.
	rmu      sync.Mutex
	rcond    *sync.Cond
	nreaders int
	rclosed  bool

	closed    chan struct{} // closed when Close starts
	done      chan struct{} // closed when the committer has returned
	closeOnce sync.Once
	closeErr  error

	counters struct {
		groups, syncs, appends, events, conflicts atomic.Uint64
		stageNanos, commitNanos, syncNanos        atomic.Uint64
	}

	c *committer // owned by the committer goroutine

	// testSync, when a test sets it before the first write, replaces
	// db.Sync on the commit path.
	testSync func() error
}

var _ journal.Store = (*Store)(nil)

// Open opens (creating if needed, unless cfg.ReadOnly) the store in cfg.Dir.
// It applies the defaults, validates cfg, opens Badger, and starts the
// committer goroutine (not in read-only mode).
func Open(cfg Config) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ReadOnly {
		// A cleanly closed Badger leaves no memtable logs; with one left,
		// a read-only badger.Open fails (and leaks its goroutines), so
		// decide before opening.
		if mems, _ := filepath.Glob(filepath.Join(cfg.Dir, "*.mem")); len(mems) > 0 {
			if !cfg.RecoverReadOnly {
				return nil, fmt.Errorf("badgerstore: open %s: %w", cfg.Dir, ErrNeedsRecovery)
			}
			if err := recoverDir(cfg); err != nil {
				return nil, fmt.Errorf("badgerstore: open %s: %w", cfg.Dir, err)
			}
		}
	}
	db, err := badger.Open(badgerOptions(cfg))
	if err != nil && cfg.ReadOnly && needsTruncate(err) {
		if !cfg.RecoverReadOnly {
			return nil, fmt.Errorf("badgerstore: open %s: %w", cfg.Dir, ErrNeedsRecovery)
		}
		if err = recoverDir(cfg); err == nil {
			db, err = badger.Open(badgerOptions(cfg))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("badgerstore: open %s: %w", cfg.Dir, err)
	}
	s := &Store{
		cfg:    cfg,
		db:     db,
		log:    cfg.Logger,
		wake:   make(chan struct{}, 1),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.rcond = sync.NewCond(&s.rmu)
	ch := make(chan struct{})
	s.notify.Store(&ch)
	st, err := s.recover()
	if err != nil {
		db.Close()
		return nil, err
	}
	s.lastPos.Store(st.LastPos)
	s.stats.Store(&st)
	if cfg.ReadOnly {
		close(s.done)
		return s, nil
	}
	s.c = newCommitter(s, st)
	go s.c.run()
	return s, nil
}

// ErrNeedsRecovery is returned by a read-only Open of a store that was not
// closed cleanly; see Config.RecoverReadOnly.
var ErrNeedsRecovery = errors.New("badgerstore: the store is in use, or was not closed cleanly and needs a read-write open to recover (see Config.RecoverReadOnly)")

// needsTruncate recognises Badger's ErrTruncateNeeded, which Badger wraps
// without %w.
func needsTruncate(err error) bool {
	return errors.Is(err, badger.ErrTruncateNeeded) || strings.Contains(err.Error(), badger.ErrTruncateNeeded.Error())
}

// recoverDir opens the directory read-write and closes it, which replays
// Badger's write-ahead log and flushes it to a table.
func recoverDir(cfg Config) error {
	cfg.ReadOnly = false
	db, err := badger.Open(badgerOptions(cfg))
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return nil
}

// badgerOptions maps cfg to Badger's options. The benchmarks open their raw
// Badger ceiling with the same options.
func badgerOptions(cfg Config) badger.Options {
	o := badger.DefaultOptions(cfg.Dir).
		WithLogger(newBadgerLogger(cfg.Logger)).
		// The committer fsyncs with db.Sync after each commit (group
		// commit); Badger's own per-write sync does not coalesce.
		WithSyncWrites(false).
		// The committer serialises every write, so Badger's conflict
		// tracking would only cost time.
		WithDetectConflicts(false).
		WithMemTableSize(memTableSize).
		WithMetricsEnabled(false).
		WithReadOnly(cfg.ReadOnly).
		WithIndexCacheSize(cfg.IndexCacheSize)
	if len(cfg.EncryptionKey) > 0 {
		o = o.WithEncryptionKey(cfg.EncryptionKey)
	}
	return o
}

// recover checks the format and loads the counters, cross-checking the last
// position against the global log.
func (s *Store) recover() (codec.Stats, error) {
	var st codec.Stats
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	item, err := txn.Get(codec.FormatKey)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		if s.cfg.ReadOnly {
			// An empty (or foreign) directory: nothing to read.
			return st, nil
		}
		err = s.db.Update(func(t *badger.Txn) error {
			return t.Set(codec.FormatKey, []byte{formatVersion})
		})
		if err == nil {
			err = s.db.Sync()
		}
		if err != nil {
			return st, fmt.Errorf("badgerstore: initialise %s: %w", s.cfg.Dir, err)
		}
		return st, nil
	case err != nil:
		return st, fmt.Errorf("badgerstore: read format: %w", err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return st, fmt.Errorf("badgerstore: read format: %w", err)
	}
	if len(v) != 1 || v[0] != formatVersion {
		return st, fmt.Errorf("badgerstore: %s holds on-disk format %x; this build reads %d", s.cfg.Dir, v, formatVersion)
	}
	item, err = txn.Get(codec.StatsKey)
	if err == nil {
		err = item.Value(func(v []byte) error {
			var derr error
			st, derr = codec.DecodeStats(v)
			return derr
		})
	}
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return st, &journal.CorruptError{Stream: "(store counters)", Err: err}
	}
	// The counters and the last log chunk are written in one transaction;
	// they must agree.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{codec.PrefixLog}, Reverse: true})
	defer it.Close()
	it.Seek(codec.LogKey(nil, math.MaxUint64))
	var last uint64
	if it.Valid() {
		if last, err = codec.ParseLogKey(it.Item().Key()); err != nil {
			return st, &journal.CorruptError{Stream: "(global log)", Err: err}
		}
	}
	if last != st.LastPos {
		return st, &journal.CorruptError{Stream: "(global log)", Position: last,
			Err: fmt.Errorf("last log position %d but counters say %d", last, st.LastPos)}
	}
	return st, nil
}

// Close stops intake, commits (and syncs) every append already queued,
// stops the committer, waits for running read iterators, and closes Badger.
// It is idempotent; afterwards methods return journal.ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		close(s.closed)
		select {
		case s.wake <- struct{}{}:
		default:
		}
		<-s.done
		s.rmu.Lock()
		s.rclosed = true
		for s.nreaders > 0 {
			s.rcond.Wait()
		}
		s.rmu.Unlock()
		var errs []error
		if !s.cfg.ReadOnly && s.failed.Load() == nil {
			if err := s.db.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("badgerstore: sync on close: %w", err))
			}
		}
		if err := s.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("badgerstore: close: %w", err))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// beginRead registers a read; it fails once Close has begun waiting.
func (s *Store) beginRead() error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.rclosed || s.isClosing() {
		return journal.ErrClosed
	}
	s.nreaders++
	return nil
}

func (s *Store) endRead() {
	s.rmu.Lock()
	s.nreaders--
	if s.nreaders == 0 {
		s.rcond.Broadcast()
	}
	s.rmu.Unlock()
}

func (s *Store) isClosing() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// Partitions is 1: a node's Badger journal is one log, its global log.
func (s *Store) Partitions() int { return 1 }

// PartitionOf is 0 for every stream.
func (s *Store) PartitionOf(string) int { return 0 }

// checkPartition refuses every partition but 0.
func checkPartition(p int) error {
	if p != 0 {
		return fmt.Errorf("%w: %d (a Badger journal has one, 0)", journal.ErrNoPartition, p)
	}
	return nil
}

// LastPosition is the position of the last acknowledged event (0 for a
// partition other than 0).
func (s *Store) LastPosition(partition int) uint64 {
	if partition != 0 {
		return 0
	}
	return s.lastPos.Load()
}

// WaitPosition blocks until the last acknowledged position exceeds after, ctx
// ends, or the store closes. It does not poll: every commit wakes waiters
// through a channel that is closed and replaced.
func (s *Store) WaitPosition(ctx context.Context, partition int, after uint64) (uint64, error) {
	if err := checkPartition(partition); err != nil {
		return 0, err
	}
	for {
		ch := s.notify.Load()
		if p := s.lastPos.Load(); p > after {
			return p, nil
		}
		select {
		case <-*ch:
		case <-ctx.Done():
			return s.lastPos.Load(), ctx.Err()
		case <-s.closed:
			return s.lastPos.Load(), journal.ErrClosed
		}
	}
}

// advance publishes a new last position and wakes the waiters.
func (s *Store) advance(pos uint64, st codec.Stats) {
	s.stats.Store(&st)
	if pos == s.lastPos.Load() {
		return
	}
	s.lastPos.Store(pos)
	ch := make(chan struct{})
	close(*s.notify.Swap(&ch))
}

// Stats summarises the store as of the last acknowledged commit.
func (s *Store) Stats(ctx context.Context) (journal.Stats, error) {
	if err := ctx.Err(); err != nil {
		return journal.Stats{}, err
	}
	if s.isClosing() {
		return journal.Stats{}, journal.ErrClosed
	}
	st := s.stats.Load()
	return journal.Stats{Streams: st.Streams, Events: st.Events, Heads: []uint64{st.LastPos}}, nil
}

// CommitStats counts the committer's work since Open.
type CommitStats struct {
	// Groups is the number of Badger commits; Syncs the number of fsyncs.
	Groups, Syncs uint64
	// Appends and Events count acknowledged appends and their events.
	Appends, Events uint64
	// Conflicts counts appends rejected by the expected-sequence check.
	Conflicts uint64
	// StageTime, CommitTime and SyncTime add up the committer's time in
	// building groups, in Badger's commit, and in db.Sync.
	StageTime, CommitTime, SyncTime time.Duration
}

// CommitStats returns the committer's counters (e.g. Events/Syncs is the
// group commit's coalescing).
func (s *Store) CommitStats() CommitStats {
	c := &s.counters
	return CommitStats{
		Groups: c.groups.Load(), Syncs: c.syncs.Load(),
		Appends: c.appends.Load(), Events: c.events.Load(), Conflicts: c.conflicts.Load(),
		StageTime:  time.Duration(c.stageNanos.Load()),
		CommitTime: time.Duration(c.commitNanos.Load()),
		SyncTime:   time.Duration(c.syncNanos.Load()),
	}
}

// translate maps Badger errors onto journal errors at the boundary.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrDBClosed):
		return journal.ErrClosed
	case errors.Is(err, badger.ErrReadOnlyTxn):
		return journal.ErrReadOnly
	}
	return fmt.Errorf("badgerstore: %w", err)
}
