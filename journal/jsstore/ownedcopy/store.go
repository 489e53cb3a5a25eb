package ownedcopy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore"
	"github.com/troupe-dev/troupe/journal/jsstore"
)

// Config configures a Store. Store and Dir are required.
type Config struct {
	// Store is the replicated journal the copy caches. The Store takes it
	// over: Close closes it.
	Store *jsstore.Store
	// Dir is the local copy's Badger directory (a node uses
	// <data-dir>/owned). Its data survives a restart: a stream's next
	// catch-up reads only what the log has past the local head.
	Dir string
	// DropAfter is how long a partition stays not owned before its local
	// data is dropped (ownership that comes back sooner, as in a rolling
	// restart or a shard moved back, keeps its copy). Default 1 minute;
	// negative: never.
	DropAfter time.Duration
	// Linger is how long an acknowledged append's local write may wait
	// for more, so that a busy stream's consecutive events are written in
	// one chunk (write.go). A read of the stream does not wait for it.
	// A crash loses what waits (the copy is a cache: the next catch-up
	// reads it from the log). Default 200 ms; negative: write at once.
	Linger time.Duration
	// Logger receives the store's logs and Badger's (component
	// badger-owned). Default: discarded.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.DropAfter == 0 {
		c.DropAfter = time.Minute
	}
	if c.Linger == 0 {
		c.Linger = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every invalid field of a defaulted Config.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("Store is required"))
	}
	if c.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ownedcopy: %w", err)
	}
	return nil
}

// Counts says how the Store answered, since it opened.
type Counts struct {
	// Local counts reads (Read, LoadSnapshot) answered from the local copy
	// alone, with no request to JetStream.
	Local uint64
	// CatchUps counts reads that first read a stream's missing suffix from
	// the log.
	CatchUps uint64
	// Passed counts reads of partitions not owned, passed to the log.
	Passed uint64
	// LocalErrors counts local reads and writes that failed (the answer
	// then came from the log).
	LocalErrors uint64
}

// catchUpChunk is how many events a catch-up writes per local transaction,
// and a local read decodes per transaction.
const catchUpChunk = 512

// maxEntries bounds the streams a partition keeps marks for; past it the
// idle ones are forgotten (their next read catches up: one or two leader
// reads when the copy is current).
const maxEntries = 1 << 16

// Store is a journal.Store that answers owned streams' reads from a local
// copy; see the package doc for its invariants.
//
// Lock order: part.mu is never held while calling the inner store or
// Badger; entry.wmu, then closeMu (shared), then part.lk. The group
// writer takes closeMu (shared), part.lk (shared) and part.mu, never
// entry.wmu; a flush waits for it holding entry.wmu alone.
type Store struct {
	cfg   Config
	inner *jsstore.Store
	db    *badger.DB
	log   *slog.Logger
	parts []*part

	local, catchUps, passed, localErrs atomic.Uint64
	// afterCatchUpRead, set by tests before use, runs when a catch-up has
	// read the log and not yet written anything locally.
	afterCatchUpRead func(stream string)

	w writer // the local copy's group commit (write.go)

	closed   atomic.Bool
	closeMu  sync.RWMutex // local operations hold it shared; Close exclusively
	dbClosed bool         // under closeMu
	stop     chan struct{}
	wg       sync.WaitGroup // the sweeper
}

// part is one partition's local state.
type part struct {
	n int

	// lk guards inc: local reads and writes hold it shared, a drop
	// exclusively while it moves the partition to a new incarnation.
	lk  sync.RWMutex
	inc uint64

	mu      sync.Mutex
	streams map[string]*entry
	// gen changes when a write of unknown outcome taints the partition
	// and when a later write succeeds (which settled it); a catch-up that
	// saw gen change marks nothing.
	gen         uint64
	unsure      bool
	unsureUnder jsstore.Fence // the fence the taint happened under
	lastOwned   time.Time
	dirty       atomic.Bool // may hold local data
}

// entry is what the Store knows of one stream of an owned partition.
type entry struct {
	wmu sync.Mutex // serialises the stream's local writes

	// Under part.mu.
	marked bool
	mark   jsstore.Fence // complete under this fence
	gen    uint64        // bumped when a write starts and ends
	busy   int           // writes in flight
	refs   int

	// last is the time of the stream's last event this Store wrote or
	// read (unix ns): an append is stamped no earlier.
	last atomic.Int64

	// The number of the stream's last write queued for the group writer
	// (write.go), until a flush saw it answered (0: none); under wmu.
	pending uint64

	// The local head as the group writer last left it (write.go), valid
	// while headOK and in incarnation headInc. The writer uses it while
	// the stream has queued writes; others under wmu after a flush.
	head    head
	headInc uint64
	headOK  bool
}

var _ journal.Store = (*Store)(nil)

// Open opens (or creates) the local copy in cfg.Dir around cfg.Store.
// On an error cfg.Store is left open.
func Open(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Store.KeepsEventTimes() {
		return nil, errors.New("ownedcopy: the replicated store must keep event times (jsstore.Config.KeepEventTimes): the local copy stamps each event before its append")
	}
	opts := badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerstore.Logger(cfg.Logger, "badger-owned")).
		// A cache: a crash loses a suffix of its writes (Badger replays
		// its log in order and whole transactions), which leaves a
		// shorter prefix; the next catch-up reads the rest.
		WithSyncWrites(false).
		// Each stream's local writes are serialised by the Store.
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithBlockCacheSize(32 << 20).
		WithMetricsEnabled(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("ownedcopy: open %s: %w", cfg.Dir, err)
	}
	s := &Store{cfg: cfg, inner: cfg.Store, db: db, log: cfg.Logger, stop: make(chan struct{})}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	s.w = writer{wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.w.answers = sync.NewCond(&s.w.mu)
	go s.write()
	s.wg.Add(1)
	go s.sweep()
	return s, nil
}

// load checks the format (a copy of another format is dropped: it is a
// cache) and reads each partition's incarnation.
func (s *Store) load() error {
	now := time.Now()
	for n := range s.inner.Partitions() {
		p := &part{n: n, streams: map[string]*entry{}, lastOwned: now}
		p.dirty.Store(true)
		s.parts = append(s.parts, p)
	}
	return s.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(versionKey)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("ownedcopy: %w", err)
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("ownedcopy: %w", err)
			}
			if len(v) != 4 || binary.BigEndian.Uint32(v) != formatVersion {
				return fmt.Errorf("ownedcopy: %s holds a local copy of format %x; this build writes %d (remove the directory: it is a cache)", s.cfg.Dir, v, formatVersion)
			}
		}
		if err := txn.Set(versionKey, binary.BigEndian.AppendUint32(nil, formatVersion)); err != nil {
			return err
		}
		for _, p := range s.parts {
			item, err := txn.Get(incKey(p.n))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
			case err != nil:
				return fmt.Errorf("ownedcopy: %w", err)
			default:
				if err := item.Value(func(v []byte) error {
					if len(v) != 8 {
						return fmt.Errorf("ownedcopy: incarnation of partition %d: %d bytes", p.n, len(v))
					}
					p.inc = binary.BigEndian.Uint64(v)
					return nil
				}); err != nil {
					return err
				}
			}
			// A copy of another stream than the log's (deleted and
			// created again) is dropped: its events are not this
			// stream's.
			id := s.inner.Identity(p.n)
			item, err = txn.Get(identityKey(p.n))
			var have []byte
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
			case err != nil:
				return fmt.Errorf("ownedcopy: %w", err)
			default:
				if have, err = item.ValueCopy(nil); err != nil {
					return fmt.Errorf("ownedcopy: %w", err)
				}
			}
			if string(have) == id {
				continue
			}
			if have != nil {
				s.log.Info("the partition's stream is not the local copy's; dropping the copy", "shard", p.n, "stream", id, "copy_of", string(have))
			}
			p.inc++
			if err := errors.Join(txn.Set(incKey(p.n), binary.BigEndian.AppendUint64(nil, p.inc)), txn.Set(identityKey(p.n), []byte(id))); err != nil {
				return fmt.Errorf("ownedcopy: %w", err)
			}
		}
		return nil
	})
}

// Inner is the replicated store the copy caches.
func (s *Store) Inner() *jsstore.Store { return s.inner }

// Counts says how reads were answered so far.
func (s *Store) Counts() Counts {
	return Counts{Local: s.local.Load(), CatchUps: s.catchUps.Load(), Passed: s.passed.Load(), LocalErrors: s.localErrs.Load()}
}

// Acquire acquires a partition in the replicated log (jsstore
// Store.Acquire). Streams marked complete under an earlier fence are not
// any more: their next read catches up from the log, which holds
// whatever another owner appended meanwhile.
func (s *Store) Acquire(ctx context.Context, partition int, epoch uint64, holder string) (jsstore.Fence, error) {
	f, err := s.inner.Acquire(ctx, partition, epoch, holder)
	if err == nil {
		p := s.parts[partition]
		p.mu.Lock()
		p.lastOwned = time.Now()
		p.mu.Unlock()
	}
	return f, err
}

// Release stops this node writing a partition (jsstore Store.Release) and
// forgets its marks; its local data is dropped once it has not been owned
// for Config.DropAfter.
func (s *Store) Release(partition int) {
	s.inner.Release(partition)
	if partition < 0 || partition >= len(s.parts) {
		return
	}
	p := s.parts[partition]
	p.mu.Lock()
	p.forget()
	p.lastOwned = time.Now()
	p.mu.Unlock()
}

// Owned reports whether this node owns a partition, and its fence.
func (s *Store) Owned(partition int) (jsstore.Fence, bool) { return s.inner.Owned(partition) }

// forget drops every mark and the idle entries. The caller holds p.mu.
func (p *part) forget() {
	for k, e := range p.streams {
		e.marked = false
		if e.refs == 0 {
			delete(p.streams, k)
		}
	}
}

// ref finds or adds a stream's entry and holds it. The caller holds p.mu.
func (p *part) ref(stream string) *entry {
	e, ok := p.streams[stream]
	if !ok {
		if len(p.streams) >= maxEntries {
			for k, x := range p.streams {
				if x.refs == 0 {
					delete(p.streams, k)
				}
			}
		}
		e = &entry{}
		p.streams[stream] = e
	}
	e.refs++
	return e
}

func (p *part) unref(stream string, e *entry) {
	p.mu.Lock()
	e.refs--
	p.mu.Unlock()
}

// complete says whether the stream's copy may answer alone under f.
func (p *part) complete(e *entry, f jsstore.Fence) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return e.marked && e.mark == f
}

// dropMark drops a stream's mark (a local read failed).
func (p *part) dropMark(e *entry) {
	p.mu.Lock()
	e.marked = false
	p.mu.Unlock()
}

// begin starts a write of a stream: it returns the stream's entry (held)
// and the partition's gen. Two writes of one stream at once drop its
// mark: their local order is not known to be the log's.
func (p *part) begin(stream string) (*entry, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.ref(stream)
	e.busy++
	e.gen++
	if e.busy > 1 {
		e.marked = false
	}
	return e, p.gen
}

// end finishes a write begun at partition gen pg. err is the log's answer;
// drop says the local copy did not take the write (or need not have:
// an idempotent repeat). A write whose outcome is unknown taints the
// partition under the fence f it had: it may land later (the log settles
// it before its next write), so no stream is marked until a write begun
// after it succeeds.
func (p *part) end(e *entry, pg uint64, err error, drop bool, f jsstore.Fence) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.busy--
	e.gen++
	e.refs--
	if err != nil || drop {
		e.marked = false
	}
	switch {
	case err != nil && !sure(err):
		p.unsure, p.unsureUnder = true, f
		p.gen++
	case err == nil && p.unsure && pg == p.gen:
		p.unsure = false
		p.gen++
	}
}

// sure says whether a write's error means that nothing was written.
func sure(err error) bool {
	var (
		ce *journal.ConflictError
		te *journal.TooLargeError
	)
	return errors.As(err, &ce) || errors.As(err, &te) || errors.Is(err, journal.ErrTombstoned) ||
		errors.Is(err, journal.ErrInvalid) || errors.Is(err, journal.ErrNotOwner) || errors.Is(err, journal.ErrClosed)
}

// Append appends to the log and, once acknowledged, queues the events for
// the local copy (written behind: the stream's next local read waits);
// see journal.Store.
func (s *Store) Append(ctx context.Context, req journal.AppendRequest) (journal.AppendResult, error) {
	if s.closed.Load() {
		return journal.AppendResult{}, journal.ErrClosed
	}
	if _, _, err := journal.ParseStream(req.Stream); err != nil {
		return s.inner.Append(ctx, req)
	}
	p := s.parts[s.inner.PartitionOf(req.Stream)]
	e, pg := p.begin(req.Stream)
	// Stamp the events (the log keeps the time: KeepEventTimes), so that
	// the local copy has the log's times; never earlier than the stream's
	// last event, as far as this node knows it.
	now := max(time.Now().UnixNano(), e.last.Load())
	evs := make([]journal.Event, len(req.Events))
	for i, ev := range req.Events {
		ev.Time = time.Unix(0, now).UTC()
		evs[i] = ev
	}
	req.Events = evs
	res, err := s.inner.Append(ctx, req)
	var lerr error
	if err == nil && !res.Duplicate {
		lerr = s.appendLocal(p, e, &req, res)
	}
	f, _ := s.inner.Holds(p.n)
	p.end(e, pg, err, res.Duplicate || lerr != nil, f)
	return res, err
}

// appendLocal queues an acknowledged append's events for the local copy.
func (s *Store) appendLocal(p *part, e *entry, req *journal.AppendRequest, res journal.AppendResult) error {
	n := uint64(len(req.Events))
	if res.LastSequence-res.FirstSequence+1 != n || res.LastPosition-res.FirstPosition+1 != n {
		return fmt.Errorf("ownedcopy: append to %q: result %+v does not match %d events", req.Stream, res, n)
	}
	for i := range req.Events {
		ev := &req.Events[i]
		ev.Stream, ev.Sequence, ev.Partition, ev.Position = req.Stream, res.FirstSequence+uint64(i), res.Partition, res.FirstPosition+uint64(i)
	}
	return s.writeLocal(p, e, req.Stream, req.Events)
}

// extend writes events of a stream to the local copy, in order, past its
// local head: events at or below the head are already there (an event
// never changes); a first event past head + 1 would leave a hole, so
// nothing is written (errGap).
func (s *Store) extend(p *part, e *entry, stream string, evs []journal.Event) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	s.flushLocked(e)
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return journal.ErrClosed
	}
	p.lk.RLock()
	defer p.lk.RUnlock()
	e.headOK = false // re-read by the next group write
	txn, err := s.prepare(p, stream, evs)
	if txn != nil {
		err = txn.Commit()
		txn.Discard()
	}
	if err == nil && len(evs) > 0 {
		if t := evs[len(evs)-1].Time.UnixNano(); t > e.last.Load() {
			e.last.Store(t)
		}
	}
	if err != nil && !errors.Is(err, errGap) {
		s.localErrs.Add(1)
		s.log.Warn("local copy not written", "shard", p.n, "stream", stream, "err", err)
	}
	return err
}

// prepare builds the transaction that extends a stream's local events
// with evs (nil: nothing to write); the caller commits and discards it.
// A write too big for one transaction commits its first part here (each
// commit leaves a prefix). The caller holds e.wmu, closeMu and p.lk.
func (s *Store) prepare(p *part, stream string, evs []journal.Event) (_ *badger.Txn, err error) {
	prefix := eventPrefix(p.n, p.inc, stream)
	txn := s.db.NewTransaction(true)
	defer func() {
		if err != nil {
			txn.Discard()
		}
	}()
	h, err := getHead(txn, prefix)
	if err != nil {
		return nil, err
	}
	for len(evs) > 0 && evs[0].Sequence <= h.seq {
		evs = evs[1:]
	}
	if len(evs) == 0 {
		txn.Discard()
		return nil, nil
	}
	if evs[0].Sequence != h.seq+1 {
		return nil, fmt.Errorf("%w: stream %q: local head %d, write from %d", errGap, stream, h.seq, evs[0].Sequence)
	}
	p.dirty.Store(true)
	var c chunk
	put := func() error {
		k, v := eventKey(prefix, c.last.seq), c.value()
		err := txn.Set(k, v)
		if errors.Is(err, badger.ErrTxnTooBig) {
			// Commit the prefix written so far, go on in a new
			// transaction: each commit leaves a prefix.
			if err := txn.Commit(); err != nil {
				return err
			}
			txn.Discard()
			txn = s.db.NewTransaction(true)
			err = txn.Set(k, v)
		}
		return err
	}
	for i := range evs {
		ev := &evs[i]
		if ev.Sequence != h.seq+1 || ev.Position <= h.pos {
			return nil, fmt.Errorf("ownedcopy: stream %q: event %d at position %d after %d at %d", stream, ev.Sequence, ev.Position, h.seq, h.pos)
		}
		c.add(ev)
		h = c.last
		if c.full() {
			if err := put(); err != nil {
				return nil, err
			}
		}
	}
	if c.n > 0 {
		if err := put(); err != nil {
			return nil, err
		}
	}
	return txn, nil
}

// SaveSnapshot saves a snapshot in the log and, once saved, locally; see
// journal.Store.
func (s *Store) SaveSnapshot(ctx context.Context, snap journal.Snapshot) error {
	if s.closed.Load() {
		return journal.ErrClosed
	}
	if _, _, err := journal.ParseStream(snap.Stream); err != nil {
		return s.inner.SaveSnapshot(ctx, snap)
	}
	p := s.parts[s.inner.PartitionOf(snap.Stream)]
	e, pg := p.begin(snap.Stream)
	err := s.inner.SaveSnapshot(ctx, snap)
	var lerr error
	if err == nil {
		snap.Time = time.Now().UTC()
		lerr = s.putSnapshot(p, e, snap.Stream, &snap, true)
	}
	f, _ := s.inner.Holds(p.n)
	p.end(e, pg, err, lerr != nil, f)
	return err
}

// putSnapshot writes a stream's snapshot locally. From a save, an older
// snapshot than the local one is ignored (as the log does); from a
// catch-up, the local one becomes the log's (nil: none).
func (s *Store) putSnapshot(p *part, e *entry, stream string, snap *journal.Snapshot, save bool) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	s.flushLocked(e)
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return journal.ErrClosed
	}
	p.lk.RLock()
	defer p.lk.RUnlock()
	k := snapKey(p.n, p.inc, stream)
	err := s.db.Update(func(txn *badger.Txn) error {
		if snap == nil {
			return txn.Delete(k)
		}
		if save {
			item, err := txn.Get(k)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
			case err != nil:
				return err
			default:
				var old uint64
				if err := item.Value(func(v []byte) error {
					if len(v) >= 8 {
						old = binary.BigEndian.Uint64(v)
					}
					return nil
				}); err != nil {
					return err
				}
				if old > snap.Sequence {
					return nil
				}
			}
		}
		p.dirty.Store(true)
		return txn.Set(k, encodeSnapshot(*snap))
	})
	if err != nil {
		s.localErrs.Add(1)
		s.log.Warn("local snapshot not written", "shard", p.n, "stream", stream, "err", err)
	}
	return err
}

// Tombstone closes a stream in the log; see journal.Store. The local copy
// holds nothing of it (reads do not see tombstones).
func (s *Store) Tombstone(ctx context.Context, stream string) error {
	if s.closed.Load() {
		return journal.ErrClosed
	}
	if _, _, err := journal.ParseStream(stream); err != nil {
		return s.inner.Tombstone(ctx, stream)
	}
	p := s.parts[s.inner.PartitionOf(stream)]
	e, pg := p.begin(stream)
	err := s.inner.Tombstone(ctx, stream)
	f, _ := s.inner.Holds(p.n)
	p.end(e, pg, err, false, f)
	return err
}

// Read yields a stream's events; see journal.Store. A stream of an owned
// partition is read from the local copy, caught up from the log first
// unless it is marked complete under the partition's current fence.
func (s *Store) Read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[journal.Event, error] {
	if _, _, err := journal.ParseStream(stream); err != nil || s.closed.Load() {
		return s.inner.Read(ctx, stream, from, limit)
	}
	return func(yield func(journal.Event, error) bool) {
		n := s.inner.PartitionOf(stream)
		f, owned := s.inner.Holds(n)
		if !owned {
			s.passed.Add(1)
			s.passRead(ctx, stream, from, limit, yield)
			return
		}
		p := s.parts[n]
		p.mu.Lock()
		e := p.ref(stream)
		p.mu.Unlock()
		defer p.unref(stream, e)
		s.flush(e) // the stream's acknowledged appends are local, or its mark is gone
		if !p.complete(e, f) {
			ok, err := s.catchUp(ctx, p, e, stream, f)
			if err != nil {
				yield(journal.Event{}, err)
				return
			}
			if !ok {
				s.passRead(ctx, stream, from, limit, yield)
				return
			}
		} else {
			s.local.Add(1)
		}
		next, sent, stop, err := s.readLocal(p, stream, from, limit, yield)
		if stop || err == nil {
			return
		}
		// The local copy failed under the read: the rest from the log.
		s.localErrs.Add(1)
		p.dropMark(e)
		s.log.Warn("local read failed; reading the log", "shard", p.n, "stream", stream, "err", err)
		if limit > 0 {
			limit -= sent
		}
		s.passRead(ctx, stream, next, limit, yield)
	}
}

func (s *Store) passRead(ctx context.Context, stream string, from uint64, limit int, yield func(journal.Event, error) bool) {
	for ev, err := range s.inner.Read(ctx, stream, from, limit) {
		if !yield(ev, err) {
			return
		}
	}
}

// readLocal yields a stream's local events from sequence from (at most
// limit, <= 0: all) up to its local head, a chunk per transaction, with
// no lock held while yielding. It returns the next sequence to read, the
// events yielded, whether the consumer stopped, and the local copy's
// error (a missing or undecodable event, a closed database).
func (s *Store) readLocal(p *part, stream string, from uint64, limit int, yield func(journal.Event, error) bool) (uint64, int, bool, error) {
	next, sent := max(from, 1), 0
	for {
		want := catchUpChunk
		if limit > 0 {
			want = min(want, limit-sent)
		}
		evs, more, err := s.localChunk(p, stream, next, want)
		if err != nil {
			return next, sent, false, err
		}
		for _, ev := range evs {
			if !yield(ev, nil) {
				return next, sent, true, nil
			}
			next, sent = ev.Sequence+1, sent+1
		}
		if !more || (limit > 0 && sent >= limit) {
			return next, sent, false, nil
		}
	}
}

// localChunk reads up to want local events of a stream from sequence
// from, and says whether the head is further.
func (s *Store) localChunk(p *part, stream string, from uint64, want int) ([]journal.Event, bool, error) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed || s.db.IsClosed() {
		return nil, false, journal.ErrClosed
	}
	p.lk.RLock()
	inc := p.inc
	txn := s.db.NewTransaction(false)
	p.lk.RUnlock()
	defer txn.Discard()
	prefix := eventPrefix(p.n, inc, stream)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix}) // no prefetch: a goroutine per value, for values that sit in the LSM tree
	defer it.Close()
	evs := make([]journal.Event, 0, min(want, 64))
	seq := from
	it.Seek(eventKey(prefix, from)) // the chunk that holds from ends at from or after
	for ; it.Valid() && len(evs) < want; it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != len(prefix)+8 {
			return nil, false, fmt.Errorf("%w: stream %q: want %d, found key %x", errMissing, stream, seq, k)
		}
		last := binary.BigEndian.Uint64(k[len(prefix):])
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, false, err
		}
		chunk, err := decodeChunk(v, stream, last, p.n)
		if err != nil {
			return nil, false, err
		}
		if first := chunk[0].Sequence; first > seq || last < seq {
			return nil, false, fmt.Errorf("%w: stream %q: want %d, found %d..%d", errMissing, stream, seq, first, last)
		}
		for _, ev := range chunk[seq-chunk[0].Sequence:] {
			if len(evs) == want {
				return evs, true, nil
			}
			evs = append(evs, ev)
			seq++
		}
	}
	// The local events end at the last key (writes keep them a prefix).
	return evs, it.Valid(), nil
}

// LoadSnapshot returns a stream's latest snapshot; see journal.Store. An
// owned stream's comes from the local copy (caught up first unless it is
// complete).
func (s *Store) LoadSnapshot(ctx context.Context, stream string) (journal.Snapshot, error) {
	if _, _, err := journal.ParseStream(stream); err != nil || s.closed.Load() {
		return s.inner.LoadSnapshot(ctx, stream)
	}
	if err := ctx.Err(); err != nil {
		return journal.Snapshot{}, err
	}
	n := s.inner.PartitionOf(stream)
	f, owned := s.inner.Holds(n)
	if !owned {
		s.passed.Add(1)
		return s.inner.LoadSnapshot(ctx, stream)
	}
	p := s.parts[n]
	p.mu.Lock()
	e := p.ref(stream)
	p.mu.Unlock()
	defer p.unref(stream, e)
	s.flush(e)
	if !p.complete(e, f) {
		ok, err := s.catchUp(ctx, p, e, stream, f)
		if err != nil {
			return journal.Snapshot{}, err
		}
		if !ok {
			return s.inner.LoadSnapshot(ctx, stream)
		}
	} else {
		s.local.Add(1)
	}
	snap, ok, err := s.localSnapshot(p, stream)
	switch {
	case err != nil:
		s.localErrs.Add(1)
		p.dropMark(e)
		s.log.Warn("local snapshot read failed; reading the log", "shard", p.n, "stream", stream, "err", err)
		return s.inner.LoadSnapshot(ctx, stream)
	case !ok:
		return journal.Snapshot{}, fmt.Errorf("snapshot of %q: %w", stream, journal.ErrNotFound)
	}
	return snap, nil
}

func (s *Store) localSnapshot(p *part, stream string) (journal.Snapshot, bool, error) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return journal.Snapshot{}, false, journal.ErrClosed
	}
	p.lk.RLock()
	defer p.lk.RUnlock()
	var (
		snap journal.Snapshot
		ok   bool
	)
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(snapKey(p.n, p.inc, stream))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		snap, err = decodeSnapshot(stream, v)
		ok = err == nil
		return err
	})
	return snap, ok, err
}

// catchUp reads what the log holds of a stream past its local head (its
// snapshot, and its events from the local head + 1) and writes it
// locally. It marks the stream complete under f0 (the fence held when
// the read began) if f0 is still held afterwards and nothing wrote the
// stream, or tainted the partition, meanwhile. It returns whether the
// local copy now holds all the log had when the read began (false: a
// local failure, read the log instead), and the log's error.
func (s *Store) catchUp(ctx context.Context, p *part, e *entry, stream string, f0 jsstore.Fence) (bool, error) {
	s.catchUps.Add(1)
	p.mu.Lock()
	g0, pg0 := e.gen, p.gen
	quiet := e.busy == 0 && !(p.unsure && p.unsureUnder == f0)
	p.mu.Unlock()

	h, err := s.localHead(p, stream)
	if err != nil {
		s.localErrs.Add(1)
		return false, nil
	}
	snap, err := s.inner.LoadSnapshot(ctx, stream)
	switch {
	case errors.Is(err, journal.ErrNotFound):
	case err != nil:
		return false, err
	}
	chunk := make([]journal.Event, 0, 64)
	for ev, err := range s.inner.ReadFrom(ctx, stream, h.seq+1, h.pos+1, 0) {
		if err != nil {
			return false, err
		}
		chunk = append(chunk, ev)
		if len(chunk) == catchUpChunk {
			if s.extend(p, e, stream, chunk) != nil {
				return false, nil
			}
			chunk = chunk[:0]
		}
	}
	if hook := s.afterCatchUpRead; hook != nil {
		hook(stream)
	}
	if len(chunk) > 0 && s.extend(p, e, stream, chunk) != nil {
		return false, nil
	}
	var sp *journal.Snapshot
	if err == nil {
		sp = &snap
	}
	if s.putSnapshot(p, e, stream, sp, false) != nil {
		return false, nil
	}
	f1, held := s.inner.Holds(p.n)
	p.mu.Lock()
	if quiet && held && f1 == f0 && e.gen == g0 && e.busy == 0 && p.gen == pg0 {
		e.marked, e.mark = true, f0
	}
	p.mu.Unlock()
	return true, nil
}

// localHead reads a stream's local head.
func (s *Store) localHead(p *part, stream string) (head, error) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return head{}, journal.ErrClosed
	}
	p.lk.RLock()
	defer p.lk.RUnlock()
	var h head
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		h, err = getHead(txn, eventPrefix(p.n, p.inc, stream))
		return err
	})
	return h, err
}

// Partitions passes through; see journal.Store.
func (s *Store) Partitions() int { return s.inner.Partitions() }

// PartitionOf passes through; see journal.Store.
func (s *Store) PartitionOf(stream string) int { return s.inner.PartitionOf(stream) }

// ReadAll passes through: projections read every partition, owned or not.
func (s *Store) ReadAll(ctx context.Context, partition int, from uint64, f journal.Filter, limit int) iter.Seq2[journal.Event, error] {
	return s.inner.ReadAll(ctx, partition, from, f, limit)
}

// Idempotent passes through; see journal.Store.
func (s *Store) Idempotent(ctx context.Context, stream, key string) (journal.AppendResult, bool, error) {
	return s.inner.Idempotent(ctx, stream, key)
}

// LastPosition passes through; see journal.Store.
func (s *Store) LastPosition(partition int) uint64 { return s.inner.LastPosition(partition) }

// WaitPosition passes through; see journal.Store.
func (s *Store) WaitPosition(ctx context.Context, partition int, after uint64) (uint64, error) {
	return s.inner.WaitPosition(ctx, partition, after)
}

// Info passes through; see journal.Store.
func (s *Store) Info(ctx context.Context, stream string) (journal.StreamInfo, error) {
	return s.inner.Info(ctx, stream)
}

// Streams passes through; see journal.Store.
func (s *Store) Streams(ctx context.Context, kind string) iter.Seq2[string, error] {
	return s.inner.Streams(ctx, kind)
}

// Stats passes through; see journal.Store.
func (s *Store) Stats(ctx context.Context) (journal.Stats, error) { return s.inner.Stats(ctx) }

// Close stops the sweeper, closes the replicated store, then the local
// copy; it is idempotent. It waits for local reads and writes in
// progress (not for iterators: consume them first, as journal.Store says).
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	s.wg.Wait()
	ierr := s.inner.Close()
	s.stopWriter()
	s.closeMu.Lock()
	s.dbClosed = true
	derr := s.db.Close()
	s.closeMu.Unlock()
	return errors.Join(ierr, derr)
}
