package badgerstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore/internal/codec"
)

type opKind uint8

const (
	opAppend opKind = iota
	opSnapshot
	opTombstone
	opDelete // internal: continue deleting covered events
)

// op states: queued, taken by the committer, abandoned by its caller.
const (
	stateQueued int32 = iota
	stateTaken
	stateAbandoned
)

// maxDeletesPerCommit bounds the covered events one commit deletes; the
// rest are deleted by following commits.
const maxDeletesPerCommit = 10_000

// op is one write waiting for the committer.
//
// Ops are pooled, and so are the envelopes of Append's events (allocations
// per append decide how often the garbage collector runs, and a collection
// during a group commit stalls it). The rules that make this safe: the
// committer signals done exactly once, having finished with the op, and the
// caller puts the op back only after it received done (an op whose caller
// gave up waiting is left to the garbage collector); the envelopes go back
// once Badger's commit has copied them (into its log and memtable), before
// done is signalled.
type op struct {
	kind   opKind
	stream string
	entity string // the stream's kind
	// append
	expected uint64
	vals     [][]byte // sealed by the committer
	tags     [][]string
	idemKey  string
	reply    []byte
	// snapshot
	snapSeq  uint64
	snapData []byte
	// delete
	deleteTo uint64

	cost    int       // estimated Badger bytes
	entries int       // estimated Badger entries
	one     [1][]byte // vals of a one-event append, saving an allocation

	state atomic.Int32
	done  chan struct{} // capacity 1: the committer sends once (see finish)
	res   journal.AppendResult
	err   error
}

var opPool = sync.Pool{New: func() any { return &op{done: make(chan struct{}, 1)} }}

// finish tells the op's caller that it is done. The committer must not
// touch the op afterwards.
func (o *op) finish() { o.done <- struct{}{} }

// freeOp puts an op whose done was received back in the pool.
func freeOp(o *op) {
	*o = op{done: o.done}
	opPool.Put(o)
}

// Envelopes of up to 4 KiB come from pools by size class (see op).
var (
	envPool256 = sync.Pool{New: func() any { return new([256]byte) }}
	envPool1K  = sync.Pool{New: func() any { return new([1024]byte) }}
	envPool4K  = sync.Pool{New: func() any { return new([4096]byte) }}
)

// envelope returns an empty slice with room for n bytes.
func envelope(n int) []byte {
	switch {
	case n <= 256:
		return envPool256.Get().(*[256]byte)[:0]
	case n <= 1024:
		return envPool1K.Get().(*[1024]byte)[:0]
	case n <= 4096:
		return envPool4K.Get().(*[4096]byte)[:0]
	}
	return make([]byte, 0, n)
}

// freeEnvelopes returns an append's envelopes to their pools.
func freeEnvelopes(vals [][]byte) {
	for i, v := range vals {
		switch cap(v) {
		case 256:
			envPool256.Put((*[256]byte)(v[:256]))
		case 1024:
			envPool1K.Put((*[1024]byte)(v[:1024]))
		case 4096:
			envPool4K.Put((*[4096]byte)(v[:4096]))
		}
		vals[i] = nil
	}
}

// Append validates and encodes the events in the caller's goroutine, queues
// them for the committer and waits for the commit (and, under SyncAlways, the
// fsync) that covers them.
//
// If ctx ends before the committer has taken the append, Append returns
// ctx.Err() and nothing is written. Once taken, Append waits for the outcome
// (bounded by one commit), so the caller always learns whether its events
// were appended.
func (s *Store) Append(ctx context.Context, req journal.AppendRequest) (journal.AppendResult, error) {
	if s.cfg.ReadOnly {
		return journal.AppendResult{}, journal.ErrReadOnly
	}
	if err := ctx.Err(); err != nil {
		return journal.AppendResult{}, err
	}
	o, err := s.newAppendOp(&req)
	if err != nil {
		return journal.AppendResult{}, err
	}
	return s.submit(ctx, o)
}

func (s *Store) newAppendOp(req *journal.AppendRequest) (*op, error) {
	entity, _, err := journal.ParseStream(req.Stream)
	if err != nil {
		return nil, err
	}
	n := len(req.Events)
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: append to %q has no events", journal.ErrInvalid, req.Stream)
	case n > s.cfg.MaxAppendEvents:
		return nil, fmt.Errorf("%w: append to %q has %d events, over the limit of %d", journal.ErrInvalid, req.Stream, n, s.cfg.MaxAppendEvents)
	case len(req.IdempotencyKey) > 1024:
		return nil, fmt.Errorf("%w: idempotency key of %d bytes is over 1024", journal.ErrInvalid, len(req.IdempotencyKey))
	case req.IdempotencyKey == "" && len(req.Reply) > 0:
		return nil, fmt.Errorf("%w: a reply needs an idempotency key", journal.ErrInvalid)
	}
	o := opPool.Get().(*op)
	o.kind, o.stream, o.entity, o.expected, o.idemKey = opAppend, req.Stream, entity, req.Expected, req.IdempotencyKey
	if n == 1 {
		o.vals = o.one[:]
	} else {
		o.vals = make([][]byte, n)
	}
	if len(req.Reply) > 0 {
		o.reply = append([]byte(nil), req.Reply...)
	}
	total := len(o.reply)
	keyLen := len(req.Stream) + 10
	for i := range req.Events {
		e := &req.Events[i]
		if err := validateEvent(req.Stream, i, e); err != nil {
			return nil, err
		}
		v := codec.AppendEvent(envelope(codec.EventSize(e)), e)
		if len(v) > s.cfg.MaxEventSize {
			return nil, &journal.TooLargeError{Stream: req.Stream, Index: i, Size: len(v), Limit: s.cfg.MaxEventSize}
		}
		total += len(v)
		o.vals[i] = v
		o.cost += keyLen + len(v) + 16
		if len(e.Tags) > 0 {
			if o.tags == nil {
				o.tags = make([][]string, n)
			}
			o.tags[i] = e.Tags
			for _, t := range e.Tags {
				// A tag chunk entry per tag, plus its share of the chunk.
				o.cost += len(t) + keyLen + 32
				o.entries++
			}
		}
	}
	if total > s.cfg.MaxAppendBytes {
		return nil, &journal.TooLargeError{Stream: req.Stream, Index: -1, Size: total, Limit: s.cfg.MaxAppendBytes}
	}
	// Events, their share of the log and kind chunks, the stream meta and
	// the idempotency record.
	o.cost += n*(2*keyLen+16) + len(o.reply) + 3*keyLen + len(o.idemKey) + 128
	o.entries += n + 4
	return o, nil
}

func validateEvent(stream string, i int, e *journal.Event) error {
	switch {
	case e.Type == "":
		return fmt.Errorf("%w: event %d of %q has an empty type", journal.ErrInvalid, i, stream)
	case len(e.Type) > 1024:
		return fmt.Errorf("%w: event %d of %q has a type of %d bytes, over 1024", journal.ErrInvalid, i, stream, len(e.Type))
	}
	for _, t := range e.Tags {
		if t == "" || len(t) > 1024 || strings.IndexByte(t, 0) >= 0 {
			return fmt.Errorf("%w: event %d of %q has an invalid tag %q (empty, over 1024 bytes, or holding NUL)", journal.ErrInvalid, i, stream, t)
		}
	}
	for k := range e.Metadata {
		if k == "" {
			return fmt.Errorf("%w: event %d of %q has an empty metadata key", journal.ErrInvalid, i, stream)
		}
	}
	return nil
}

// SaveSnapshot stores snap as the stream's latest snapshot, durable per the
// sync policy. A snapshot older than the stored one is ignored. The store
// sets Time to the commit time. With Config.DeleteCoveredEvents the events
// up to snap.Sequence are deleted.
func (s *Store) SaveSnapshot(ctx context.Context, snap journal.Snapshot) error {
	if s.cfg.ReadOnly {
		return journal.ErrReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	entity, _, err := journal.ParseStream(snap.Stream)
	if err != nil {
		return err
	}
	if snap.Sequence == 0 {
		return fmt.Errorf("%w: snapshot of %q at sequence 0", journal.ErrInvalid, snap.Stream)
	}
	if len(snap.Data) > s.cfg.MaxSnapshotSize {
		return &journal.TooLargeError{Stream: snap.Stream, Index: -1, Size: len(snap.Data), Limit: s.cfg.MaxSnapshotSize}
	}
	o := &op{
		kind: opSnapshot, stream: snap.Stream, entity: entity, snapSeq: snap.Sequence,
		snapData: append([]byte(nil), snap.Data...), done: make(chan struct{}, 1),
		cost: len(snap.Data) + 2*len(snap.Stream) + 128, entries: 3,
	}
	_, err = s.submit(ctx, o)
	return err
}

// Tombstone marks a stream closed for good: later appends fail with
// journal.ErrTombstoned. Its events stay readable. Tombstoning an unknown
// stream reserves its id; tombstoning twice is not an error.
func (s *Store) Tombstone(ctx context.Context, stream string) error {
	if s.cfg.ReadOnly {
		return journal.ErrReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	entity, _, err := journal.ParseStream(stream)
	if err != nil {
		return err
	}
	o := &op{kind: opTombstone, stream: stream, entity: entity, done: make(chan struct{}, 1), cost: len(stream) + 128, entries: 2}
	_, err = s.submit(ctx, o)
	return err
}

func (s *Store) submit(ctx context.Context, o *op) (journal.AppendResult, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		freeOp(o)
		return journal.AppendResult{}, journal.ErrClosed
	}
	if perr := s.failed.Load(); perr != nil {
		s.mu.Unlock()
		freeOp(o)
		return journal.AppendResult{}, *perr
	}
	s.queue = append(s.queue, o)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	select {
	case <-o.done:
	case <-ctx.Done():
		if o.state.CompareAndSwap(stateQueued, stateAbandoned) {
			// The committer will still see the op: leave it to the
			// garbage collector.
			return journal.AppendResult{}, ctx.Err()
		}
		<-o.done
	}
	res, err := o.res, o.err
	freeOp(o)
	return res, err
}

// head is what the committer knows of a stream.
type head struct {
	exists     bool // has a metadata record
	tombstoned bool
	created    int64
	lastSeq    uint64
	lastTime   int64
	floorSeq   uint64 // LastSeq of the metadata record
	floorTime  int64
	deleted    uint64 // events 1..deleted were deleted under a snapshot
}

// committer owns position and sequence assignment, the stream-head cache
// and every write to Badger. It runs in one goroutine, started by Open and
// stopped by Close. It owns a second goroutine, the releaser (releaseLoop),
// which publishes each acknowledged group's position and wakes its callers
// while the committer goes on with the next group.
type committer struct {
	s     *Store
	heads map[string]*head
	stats codec.Stats
	// lastTime keeps commit times from going backwards.
	lastTime int64
	// deletes are pending deletions of covered events, carried over to the
	// next commits.
	deletes []*op
	dirty   bool // written since the last sync (SyncInterval)

	// per-commit state, reused
	g group
	// free holds head records for reuse by the overlay.
	free []*head

	// releases carries acknowledged groups to the releaser, in commit
	// order; spareOps brings their op slices back for reuse.
	releases chan released
	spareOps chan []*op
}

// released is a group whose callers may be released: committed and, under
// SyncAlways, synced.
type released struct {
	ops    []*op
	stats  codec.Stats
	events int
}

type group struct {
	ops     []*op
	overlay map[string]*head
	entries []badger.Entry
	keys    []byte
	log     codec.ChunkWriter
	kinds   map[string]*codec.ChunkWriter
	tags    map[string]*codec.ChunkWriter
	idem    map[string]codec.Idem
	rtx     *badger.Txn
	stats   codec.Stats
	now     int64
	events  int
	cost    int
	nent    int
	wrote   bool
	start   time.Time
	free    []*codec.ChunkWriter
}

func newCommitter(s *Store, st codec.Stats) *committer {
	return &committer{
		s:     s,
		heads: make(map[string]*head),
		stats: st,
		g: group{
			overlay: make(map[string]*head),
			kinds:   make(map[string]*codec.ChunkWriter),
			tags:    make(map[string]*codec.ChunkWriter),
			idem:    make(map[string]codec.Idem),
		},
	}
}

func (c *committer) run() {
	s := c.s
	defer close(s.done)
	c.releases = make(chan released, 4)
	c.spareOps = make(chan []*op, 4)
	stopped := make(chan struct{})
	go c.releaseLoop(stopped)
	defer func() {
		close(c.releases)
		<-stopped
	}()
	var tick <-chan time.Time
	if s.cfg.Sync == SyncInterval {
		t := time.NewTicker(s.cfg.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-s.wake:
		case <-tick:
			if c.dirty && s.failed.Load() == nil {
				c.dirty = false
				if err := s.sync(); err != nil {
					c.fail(fmt.Errorf("badgerstore: periodic sync: %w", err))
				} else {
					s.counters.syncs.Add(1)
				}
			}
			continue
		}
		for {
			s.mu.Lock()
			ops := s.queue
			s.queue = nil
			closing := s.closing
			s.mu.Unlock()
			if len(ops) == 0 && len(c.deletes) == 0 {
				if closing {
					return
				}
				break
			}
			c.process(ops)
		}
	}
}

// releaseLoop is the releaser goroutine: for each acknowledged group, in
// commit order, it publishes the new last position and counters and wakes
// the group's callers. Waking a few hundred goroutines takes the Go runtime
// a noticeable time; done here, it overlaps the committer's next group
// instead of delaying it. It touches only what it is sent and the Store's
// atomics.
func (c *committer) releaseLoop(stopped chan<- struct{}) {
	defer close(stopped)
	for r := range c.releases {
		c.s.release(r)
		clear(r.ops)
		select {
		case c.spareOps <- r.ops[:0]:
		default:
		}
	}
}

// release publishes an acknowledged group's position and counters and
// releases its callers.
func (s *Store) release(r released) {
	s.advance(r.stats.LastPos, r.stats)
	var appends uint64
	for _, o := range r.ops {
		if o.kind == opAppend {
			if o.err == nil && !o.res.Duplicate {
				appends++
			}
			// Committed: Badger has copied them.
			freeEnvelopes(o.vals)
		}
		o.finish()
	}
	s.counters.appends.Add(appends)
	s.counters.events.Add(uint64(r.events))
}

// sync is db.Sync, or a test's stand-in.
func (s *Store) sync() error {
	if s.testSync != nil {
		return s.testSync()
	}
	return s.db.Sync()
}

// fail makes err sticky: the committer cannot know what Badger holds after a
// failed commit or sync, so no further write is accepted.
func (c *committer) fail(err error) {
	c.s.failed.CompareAndSwap(nil, &err)
	c.s.log.Error("journal store failed; no further writes", "err", err)
}

// process commits ops, in order, in as many groups as their size needs.
func (c *committer) process(ops []*op) {
	for len(ops) > 0 || len(c.deletes) > 0 {
		if perr := c.s.failed.Load(); perr != nil {
			for _, o := range ops {
				o.err = *perr
				o.finish()
			}
			for _, o := range c.deletes {
				o.finish()
			}
			c.deletes = nil
			return
		}
		ops = c.commitGroup(ops)
	}
}

// commitGroup commits a prefix of ops that fits in one Badger transaction,
// and returns the rest.
func (c *committer) commitGroup(ops []*op) []*op {
	s := c.s
	g := &c.g
	g.reset(c)
	now := time.Now().UnixNano()
	if now <= c.lastTime {
		now = c.lastTime + 1
	}
	g.now = now
	g.start = time.Now()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	defer g.closeRead()

	// Pending deletions go first, one per commit.
	if len(c.deletes) > 0 {
		o := c.deletes[0]
		c.deletes = c.deletes[1:]
		if err := c.stageDelete(g, txn, o); err != nil {
			s.log.Error("deleting covered events", "stream", o.stream, "err", err)
		}
	}
	var rest []*op
	for i, o := range ops {
		if o.cost+g.cost > groupBytes() || o.entries+g.nent > groupEntries {
			if len(g.ops) > 0 || g.nent > 0 {
				rest = ops[i:]
				break
			}
		}
		if !o.state.CompareAndSwap(stateQueued, stateTaken) {
			continue // abandoned by its caller
		}
		g.ops = append(g.ops, o)
		g.cost += o.cost
		g.nent += o.entries
		switch o.kind {
		case opAppend:
			o.err = c.stageAppend(g, txn, o)
		case opSnapshot:
			o.err = c.stageSnapshot(g, txn, o)
		case opTombstone:
			o.err = c.stageTombstone(g, txn, o)
		}
		if o.err != nil && !isOpError(o.err) {
			// A Badger error while staging: the transaction is in an
			// unknown state; fail the whole group. The ops after it go to
			// the next group.
			c.abort(g, o.err)
			return ops[i+1:]
		}
	}
	if !g.wrote {
		c.ack(g)
		return rest
	}
	if err := c.finish(g, txn); err != nil {
		c.abort(g, err)
		return rest
	}
	t0 := time.Now()
	if err := txn.Commit(); err != nil {
		err = fmt.Errorf("badgerstore: commit: %w", err)
		c.fail(err)
		c.abort(g, err)
		return rest
	}
	t1 := time.Now()
	s.counters.groups.Add(1)
	s.counters.stageNanos.Add(uint64(t0.UnixNano() - g.start.UnixNano()))
	s.counters.commitNanos.Add(uint64(t1.Sub(t0)))
	switch s.cfg.Sync {
	case SyncAlways:
		err := s.sync()
		s.counters.syncNanos.Add(uint64(time.Since(t1)))
		if err != nil {
			err = fmt.Errorf("badgerstore: sync: %w", err)
			c.fail(err)
			c.abort(g, err)
			return rest
		}
		s.counters.syncs.Add(1)
	case SyncInterval:
		c.dirty = true
	}
	c.ack(g)
	return rest
}

// isOpError tells errors that fail one op (conflicts, bad input) from
// storage errors that fail the group.
func isOpError(err error) bool {
	var ce *journal.ConflictError
	var corrupt *journal.CorruptError
	return errors.As(err, &ce) || errors.As(err, &corrupt) || errors.Is(err, journal.ErrTombstoned) || errors.Is(err, journal.ErrInvalid)
}

func (g *group) reset(c *committer) {
	g.ops = g.ops[:0]
	// Heads left in the overlay (the group failed) were never adopted:
	// reuse them.
	for _, h := range g.overlay {
		c.free = append(c.free, h)
	}
	clear(g.overlay)
	clear(g.entries)
	g.entries = g.entries[:0]
	g.keys = g.keys[:0]
	g.log.Reset()
	for k, w := range g.kinds {
		g.free = append(g.free, w)
		delete(g.kinds, k)
	}
	for k, w := range g.tags {
		g.free = append(g.free, w)
		delete(g.tags, k)
	}
	clear(g.idem)
	g.stats = c.stats
	g.events, g.cost, g.nent = 0, 0, 0
	g.wrote = false
}

func (g *group) closeRead() {
	if g.rtx != nil {
		g.rtx.Discard()
		g.rtx = nil
	}
}

func (g *group) read(db *badger.DB) *badger.Txn {
	if g.rtx == nil {
		g.rtx = db.NewTransaction(false)
	}
	return g.rtx
}

func (g *group) chunk(m map[string]*codec.ChunkWriter, name string) *codec.ChunkWriter {
	w := m[name]
	if w == nil {
		if n := len(g.free); n > 0 {
			w = g.free[n-1]
			g.free = g.free[:n-1]
			w.Reset()
		} else {
			w = new(codec.ChunkWriter)
		}
		m[name] = w
	}
	return w
}

// set adds an entry to txn; key and value must stay untouched until commit.
func (g *group) set(txn *badger.Txn, key, val []byte, ttl time.Duration) error {
	g.wrote = true
	g.entries = append(g.entries, badger.Entry{Key: key, Value: val})
	e := &g.entries[len(g.entries)-1]
	if ttl > 0 {
		e.ExpiresAt = uint64(time.Now().Add(ttl).Unix())
	}
	if err := txn.SetEntry(e); err != nil {
		return fmt.Errorf("badgerstore: stage write: %w", err)
	}
	return nil
}

// key builds a key in the group's arena. Earlier keys stay valid when the
// arena grows (they keep the old array).
func (g *group) key(build func([]byte) []byte) []byte {
	start := len(g.keys)
	g.keys = build(g.keys)
	return g.keys[start:len(g.keys):len(g.keys)]
}

// head returns the group's view of a stream, loading it on a cache miss.
func (c *committer) head(g *group, stream string) (*head, error) {
	if h := g.overlay[stream]; h != nil {
		return h, nil
	}
	var h *head
	if n := len(c.free); n > 0 {
		h, c.free = c.free[n-1], c.free[:n-1]
		*h = head{}
	} else {
		h = new(head)
	}
	if cached := c.heads[stream]; cached != nil {
		*h = *cached
	} else if err := c.load(g, stream, h); err != nil {
		c.free = append(c.free, h)
		return nil, err
	}
	g.overlay[stream] = h
	return h, nil
}

// load reads a stream's head from Badger.
func (c *committer) load(g *group, stream string, h *head) error {
	rtx := g.read(c.s.db)
	item, err := rtx.Get(codec.StreamKey(nil, stream))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("badgerstore: read stream %q: %w", stream, err)
	}
	var m codec.StreamMeta
	if err := item.Value(func(v []byte) (err error) { m, err = codec.DecodeStreamMeta(v); return err }); err != nil {
		return &journal.CorruptError{Stream: stream, Err: err}
	}
	h.exists, h.tombstoned, h.created = true, m.Tombstoned, m.Created
	h.lastSeq, h.lastTime, h.floorSeq, h.floorTime = m.LastSeq, m.LastTime, m.LastSeq, m.LastTime
	h.deleted = m.Deleted
	seq, ev, ok, err := lastEvent(rtx, stream)
	if err != nil {
		return err
	}
	if ok && seq > h.lastSeq {
		h.lastSeq, h.lastTime = seq, ev.Time.UnixNano()
	}
	return nil
}

func (c *committer) stageAppend(g *group, txn *badger.Txn, o *op) error {
	h, err := c.head(g, o.stream)
	if err != nil {
		return err
	}
	var ikey []byte
	if o.idemKey != "" {
		ikey = g.key(func(b []byte) []byte { return codec.IdemKey(b, o.stream, o.idemKey) })
		r, found, err := c.idem(g, ikey)
		if err != nil {
			return err
		}
		if found {
			o.res = journal.AppendResult{FirstSequence: r.FirstSeq, LastSequence: r.LastSeq,
				FirstPosition: r.FirstPos, LastPosition: r.LastPos, Duplicate: true, Reply: r.Reply}
			return nil
		}
	}
	if h.tombstoned {
		return fmt.Errorf("append to %q: %w", o.stream, journal.ErrTombstoned)
	}
	if o.expected != journal.ExpectAny && o.expected != h.lastSeq {
		c.s.counters.conflicts.Add(1)
		return &journal.ConflictError{Stream: o.stream, Expected: o.expected, Actual: h.lastSeq}
	}
	if !h.exists {
		h.exists, h.created = true, g.now
		g.stats.Streams++
		if err := c.writeMeta(g, txn, o.stream, h); err != nil {
			return err
		}
	} else if h.created == 0 {
		h.created = g.now
		if err := c.writeMeta(g, txn, o.stream, h); err != nil {
			return err
		}
	}
	first, firstPos := h.lastSeq+1, g.stats.LastPos+1
	kind := g.chunk(g.kinds, o.entity)
	for i, v := range o.vals {
		seq, pos := first+uint64(i), firstPos+uint64(i)
		codec.SealEvent(v, pos, g.now)
		k := g.key(func(b []byte) []byte { return codec.EventKey(b, o.stream, seq) })
		if err := g.set(txn, k, v, 0); err != nil {
			return err
		}
		g.log.Add(pos, o.stream, seq)
		kind.Add(pos, o.stream, seq)
		if o.tags != nil {
			for j, t := range o.tags[i] {
				if dupTag(o.tags[i][:j], t) {
					continue
				}
				g.chunk(g.tags, t).Add(pos, o.stream, seq)
			}
		}
	}
	n := uint64(len(o.vals))
	h.lastSeq += n
	h.lastTime = g.now
	g.stats.LastPos += n
	g.stats.Events += n
	g.events += len(o.vals)
	o.res = journal.AppendResult{FirstSequence: first, LastSequence: h.lastSeq, FirstPosition: firstPos, LastPosition: g.stats.LastPos}
	if ikey != nil {
		r := codec.Idem{FirstSeq: first, LastSeq: h.lastSeq, FirstPos: firstPos, LastPos: g.stats.LastPos, Reply: o.reply}
		g.idem[string(ikey)] = r
		if err := g.set(txn, ikey, codec.AppendIdem(nil, r), c.s.cfg.IdempotencyTTL); err != nil {
			return err
		}
		o.res.Reply = o.reply
	}
	return nil
}

func dupTag(before []string, t string) bool {
	for _, x := range before {
		if x == t {
			return true
		}
	}
	return false
}

// idem looks an idempotency key up in this group, then in Badger.
func (c *committer) idem(g *group, key []byte) (codec.Idem, bool, error) {
	if r, ok := g.idem[string(key)]; ok {
		return r, true, nil
	}
	item, err := g.read(c.s.db).Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return codec.Idem{}, false, nil
	}
	if err != nil {
		return codec.Idem{}, false, fmt.Errorf("badgerstore: read idempotency record: %w", err)
	}
	var r codec.Idem
	if err := item.Value(func(v []byte) (err error) { r, err = codec.DecodeIdem(v); return err }); err != nil {
		return codec.Idem{}, false, &journal.CorruptError{Stream: string(key[1:]), Err: err}
	}
	return r, true, nil
}

func (c *committer) writeMeta(g *group, txn *badger.Txn, stream string, h *head) error {
	m := codec.StreamMeta{Tombstoned: h.tombstoned, Created: h.created, LastSeq: h.floorSeq, LastTime: h.floorTime, Deleted: h.deleted}
	k := g.key(func(b []byte) []byte { return codec.StreamKey(b, stream) })
	return g.set(txn, k, codec.AppendStreamMeta(nil, m), 0)
}

func (c *committer) stageTombstone(g *group, txn *badger.Txn, o *op) error {
	h, err := c.head(g, o.stream)
	if err != nil {
		return err
	}
	if h.tombstoned {
		return nil
	}
	if !h.exists {
		h.exists = true
		g.stats.Streams++
	}
	h.tombstoned = true
	return c.writeMeta(g, txn, o.stream, h)
}

func (c *committer) stageSnapshot(g *group, txn *badger.Txn, o *op) error {
	h, err := c.head(g, o.stream)
	if err != nil {
		return err
	}
	if h.tombstoned {
		return fmt.Errorf("snapshot of %q: %w", o.stream, journal.ErrTombstoned)
	}
	if o.snapSeq > h.lastSeq {
		return fmt.Errorf("%w: snapshot of %q at sequence %d, beyond its last sequence %d", journal.ErrInvalid, o.stream, o.snapSeq, h.lastSeq)
	}
	key := g.key(func(b []byte) []byte { return codec.SnapshotKey(b, o.stream) })
	// Keep the newest snapshot: an older one is ignored.
	item, err := txn.Get(key)
	switch {
	case err == nil:
		var seq uint64
		verr := item.Value(func(v []byte) (err error) { seq, _, _, err = codec.DecodeSnapshot(v); return err })
		if verr == nil && seq > o.snapSeq {
			return nil
		}
	case !errors.Is(err, badger.ErrKeyNotFound):
		return fmt.Errorf("badgerstore: read snapshot: %w", err)
	}
	if err := g.set(txn, key, codec.AppendSnapshot(nil, o.snapSeq, g.now, o.snapData), 0); err != nil {
		return err
	}
	if c.s.cfg.DeleteCoveredEvents {
		d := &op{kind: opDelete, stream: o.stream, deleteTo: o.snapSeq, done: make(chan struct{}, 1)}
		return c.stageDelete(g, txn, d)
	}
	return nil
}

// stageDelete deletes up to maxDeletesPerCommit covered events of a stream,
// oldest first, so that what remains is always a suffix of the stream; the
// rest is queued for the next commit.
func (c *committer) stageDelete(g *group, txn *badger.Txn, o *op) error {
	h, err := c.head(g, o.stream)
	if err != nil {
		return err
	}
	first := h.deleted + 1
	if first > o.deleteTo {
		return nil
	}
	to := min(o.deleteTo, first+maxDeletesPerCommit-1)
	for seq := first; seq <= to; seq++ {
		k := g.key(func(b []byte) []byte { return codec.EventKey(b, o.stream, seq) })
		if err := txn.Delete(k); err != nil {
			return fmt.Errorf("badgerstore: stage delete: %w", err)
		}
	}
	g.wrote = true
	g.nent += int(to - first + 1)
	g.stats.Events -= to - first + 1
	// The head must survive the deletion of every event.
	h.floorSeq, h.floorTime, h.deleted = h.lastSeq, h.lastTime, to
	if err := c.writeMeta(g, txn, o.stream, h); err != nil {
		return err
	}
	if to < o.deleteTo {
		c.deletes = append(c.deletes, o)
	}
	return nil
}

// finish adds the index chunks and the counters to the transaction.
func (c *committer) finish(g *group, txn *badger.Txn) error {
	if g.log.Len() > 0 {
		k := g.key(func(b []byte) []byte { return codec.LogKey(b, g.log.LastPos()) })
		if err := g.set(txn, k, g.log.Bytes(), 0); err != nil {
			return err
		}
	}
	for _, idx := range []struct {
		prefix byte
		m      map[string]*codec.ChunkWriter
	}{{codec.PrefixKind, g.kinds}, {codec.PrefixTag, g.tags}} {
		for name, w := range idx.m {
			if w.Len() == 0 {
				continue
			}
			k := g.key(func(b []byte) []byte { return codec.IndexKey(b, idx.prefix, name, w.LastPos()) })
			if err := g.set(txn, k, w.Bytes(), 0); err != nil {
				return err
			}
		}
	}
	return g.set(txn, codec.StatsKey, codec.AppendStats(nil, g.stats), 0)
}

// abort fails every op of the group with err (ops that had their own error
// keep it) and forgets the group's state.
func (c *committer) abort(g *group, err error) {
	for _, o := range g.ops {
		if o.err == nil || !isOpError(o.err) {
			o.err = err
			o.res = journal.AppendResult{}
		}
		o.finish()
	}
	g.ops = g.ops[:0]
}

// ack makes the group's state the committer's and hands the group to the
// releaser, which publishes the new position and releases the callers.
func (c *committer) ack(g *group) {
	for stream, h := range g.overlay {
		if cached := c.heads[stream]; cached != nil {
			*cached = *h
			c.free = append(c.free, h)
			continue
		}
		if len(c.heads) >= c.s.cfg.StreamCacheSize {
			// Evict an arbitrary head (map order is random enough).
			for k := range c.heads {
				delete(c.heads, k)
				break
			}
		}
		c.heads[stream] = h
	}
	clear(g.overlay) // the heads now belong to the cache
	c.stats = g.stats
	if g.events > 0 {
		c.lastTime = g.now
	}
	c.releases <- released{ops: g.ops, stats: c.stats, events: g.events}
	select {
	case g.ops = <-c.spareOps:
	default:
		g.ops = nil
	}
}

// lastEvent returns the last event of a stream (its envelope decoded).
func lastEvent(rtx *badger.Txn, stream string) (uint64, journal.Event, bool, error) {
	prefix := codec.EventPrefix(nil, stream)
	it := rtx.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	defer it.Close()
	it.Seek(codec.EventKey(nil, stream, math.MaxUint64))
	if !it.Valid() {
		return 0, journal.Event{}, false, nil
	}
	item := it.Item()
	seq, err := codec.EventKeySeq(item.Key())
	if err != nil {
		return 0, journal.Event{}, false, &journal.CorruptError{Stream: stream, Err: err}
	}
	var ev journal.Event
	var d codec.Decoder
	if err := item.Value(func(v []byte) error { return d.DecodeEvent(v, &ev) }); err != nil {
		return 0, journal.Event{}, false, &journal.CorruptError{Stream: stream, Sequence: seq, Err: err}
	}
	return seq, ev, true, nil
}
