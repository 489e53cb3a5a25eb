package ownedcopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
)

// The local writes of acknowledged appends are group-committed and
// written behind: an append queues its events for the local copy and
// returns once the log acknowledged it; one goroutine, the writer, takes
// what is queued and commits it in one Badger transaction. Anything that
// uses a stream's local data (a read, a catch-up, a snapshot) first waits
// for the stream's queued writes (Store.flush), and a queued write that
// fails drops the stream's mark before it counts as done, so a read never
// trusts a copy that misses an acknowledged event. Waiting for the local
// write inside each append nearly doubled its latency under load (three
// hand-offs between goroutines on a busy machine) and cost 32-43 % of a
// node's append rate (docs/benchmarks.md, "The store's appends beside the
// ceilings"); a transaction per append, before the group writer,
// serialised every append behind Badger's write pipeline.
//
// The writer lingers: it takes the queue once its oldest write has waited
// Config.Linger, or the queue holds maxQueued bytes, or a flush waits, or
// the Store closes. Meanwhile a busy stream's appends gather, and the
// writer puts each stream's consecutive events in one chunk, one Badger
// key (local.go): a key per event cost about 8 µs of CPU per append in
// the benchmark (its insert, its log entry, its share of flushes and
// compactions), a quarter of what the rest of the append costs, and on a
// node that shares its cores with JetStream that CPU is the append rate
// (docs/benchmarks.md, "Chunks and gathering").

// maxQueued is how many bytes of events (about) the writer lets gather
// before it writes them, lingering or not: a bound on the memory held,
// and about two of Badger's transactions with the copy's 16 MiB memtable
// (15 % of it each; a group commits in as many as it needs). At 1 MiB
// the queue filled before the linger ended and chunks were smaller.
const maxQueued = 4 << 20

// writer is the group writer's queue.
type writer struct {
	mu          sync.Mutex
	queue       []*writeReq
	queuedBytes int       // the events' bytes in queue, about
	first       time.Time // when the oldest write in queue was queued
	urgent      bool      // a flush waits: take the queue now
	closed      bool
	queued      uint64        // the last request's number (they count from 1)
	answered    uint64        // requests up to this number are answered
	answers     *sync.Cond    // on mu: answered moved
	wake        chan struct{} // capacity 1
	done        chan struct{} // closed when the writer has stopped
	commits     atomic.Uint64 // transactions committed (tests)
}

// writeReq is one stream's events to write locally.
type writeReq struct {
	p      *part
	e      *entry
	inc    uint64
	stream string
	evs    []journal.Event
	n      uint64 // its number in the queue
}

// writeLocal queues an acknowledged append's events for the local copy
// and returns without waiting for them (ErrClosed when the copy is
// closing: then nothing is queued).
func (s *Store) writeLocal(p *part, e *entry, stream string, evs []journal.Event) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return journal.ErrClosed
	}
	p.lk.RLock()
	inc := p.inc
	p.lk.RUnlock()
	size := 0
	for i := range evs {
		size += len(evs[i].Payload) + len(evs[i].Type) + 32
	}
	r := &writeReq{p: p, e: e, inc: inc, stream: stream, evs: evs}
	s.w.mu.Lock()
	if s.w.closed {
		s.w.mu.Unlock()
		return journal.ErrClosed
	}
	// The queued write holds the entry (the writer lets go), so that the
	// stream's next reader finds this entry, and its pending write, and
	// not a new one.
	p.mu.Lock()
	e.refs++
	p.mu.Unlock()
	s.w.queued++
	r.n = s.w.queued
	// The writer sleeps on an empty queue and otherwise until the oldest
	// write's linger ends: wake it for a first write, or a full queue.
	wake := len(s.w.queue) == 0 || (s.w.queuedBytes < maxQueued && s.w.queuedBytes+size >= maxQueued)
	if len(s.w.queue) == 0 {
		s.w.first = time.Now()
	}
	s.w.queue = append(s.w.queue, r)
	s.w.queuedBytes += size
	s.w.mu.Unlock()
	e.pending = r.n
	if wake {
		s.w.poke()
	}
	return nil
}

func (w *writer) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// flushLocked waits until the stream's queued local writes are done
// (written, or failed and its mark dropped), asking the writer not to
// linger. The writer answers in queue order, so the last one queued is
// the one to wait for (a number and a condition rather than a channel per
// write: one allocation less on every append). The caller holds e.wmu (no
// write can be queued meanwhile) and no other lock.
func (s *Store) flushLocked(e *entry) {
	if e.pending == 0 {
		return
	}
	s.w.mu.Lock()
	if s.w.answered < e.pending {
		s.w.urgent = true
		s.w.poke()
	}
	for s.w.answered < e.pending {
		s.w.answers.Wait()
	}
	s.w.mu.Unlock()
	e.pending = 0
}

// flush is flushLocked for a caller without e.wmu.
func (s *Store) flush(e *entry) {
	e.wmu.Lock()
	s.flushLocked(e)
	e.wmu.Unlock()
}

// write is the group writer's goroutine; stopWriter ends it.
func (s *Store) write() {
	defer close(s.w.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		s.w.mu.Lock()
		batch, wait, stop := s.w.take(s.cfg.Linger)
		s.w.mu.Unlock()
		switch {
		case batch != nil:
			s.commitGroup(batch)
			continue
		case stop:
			return
		case wait > 0:
			timer.Reset(wait)
		}
		select {
		case <-s.w.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// take returns the queue if it is time to write it; otherwise how long to
// sleep at most (0: until woken), or stop once closed and empty. The
// caller holds w.mu.
func (w *writer) take(linger time.Duration) (batch []*writeReq, wait time.Duration, stop bool) {
	if len(w.queue) == 0 {
		w.urgent = false
		return nil, 0, w.closed
	}
	if waited := time.Since(w.first); !w.closed && !w.urgent && w.queuedBytes < maxQueued && waited < linger {
		return nil, linger - waited, false
	}
	batch = w.queue
	w.queue, w.queuedBytes, w.urgent = nil, 0, false
	return batch, 0, false
}

// stopWriter refuses new writes, lets the writer finish those queued and
// waits for it.
func (s *Store) stopWriter() {
	s.w.mu.Lock()
	s.w.closed = true
	s.w.mu.Unlock()
	s.w.poke()
	<-s.w.done
}

// streamWrite is what a group writes of one stream: the stream's requests
// in queue order, the head its chunks leave, and its first error (which
// fails all its requests in the group: their stream's mark drops).
type streamWrite struct {
	p      *part
	e      *entry
	stream string
	reqs   []*writeReq
	head   head
	err    error
	inTxn  bool
}

// commitGroup writes a group of requests in as few transactions as fit
// (each stream's consecutive events in chunks) and answers each, in
// order. A stream may have several requests in a group (an append does
// not wait for its local write). Until a request is answered nothing else
// touches its entry's head (flush waits for it under e.wmu).
func (s *Store) commitGroup(batch []*writeReq) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	locked := map[*part]bool{} // partitions whose lk this holds shared
	streams := map[*entry]*streamWrite{}
	var order []*streamWrite
	defer func() {
		for p := range locked {
			p.lk.RUnlock()
		}
		for _, w := range order {
			if w.err != nil {
				w.e.headOK = false
				if !errors.Is(w.err, errGap) && !errors.Is(w.err, journal.ErrClosed) {
					s.localErrs.Add(1)
					s.log.Warn("local copy not written", "shard", w.p.n, "stream", w.stream, "err", w.err)
				}
			}
			w.p.mu.Lock()
			if w.err != nil {
				// The copy misses an acknowledged event: no local
				// answer for this stream until a catch-up.
				w.e.marked = false
				w.e.gen++
			}
			w.e.refs -= len(w.reqs)
			w.p.mu.Unlock()
		}
		s.w.mu.Lock()
		s.w.answered = batch[len(batch)-1].n
		s.w.answers.Broadcast()
		s.w.mu.Unlock()
	}()
	for _, r := range batch {
		w := streams[r.e]
		if w == nil {
			w = &streamWrite{p: r.p, e: r.e, stream: r.stream}
			streams[r.e] = w
			order = append(order, w)
		}
		w.reqs = append(w.reqs, r)
	}
	if s.dbClosed || s.db.IsClosed() {
		for _, w := range order {
			w.err = journal.ErrClosed
		}
		return
	}
	g := &groupTxn{commits: &s.w.commits, db: s.db, txn: s.db.NewTransaction(true)}
	for _, w := range order {
		if !locked[w.p] {
			w.p.lk.RLock()
			locked[w.p] = true
		}
		if err := g.stream(w); err != nil && w.err == nil {
			w.err = err
		}
	}
	if len(g.written) > 0 {
		g.commit()
	}
	g.txn.Discard()
	for _, w := range order {
		if w.err == nil {
			w.e.head, w.e.headInc, w.e.headOK = w.head, w.p.inc, true
			if t := w.head.time; t > w.e.last.Load() {
				w.e.last.Store(t)
			}
		}
	}
}

// groupTxn is a group's current transaction and the streams with writes
// in it.
type groupTxn struct {
	commits *atomic.Uint64 // the Store's count
	db      *badger.DB
	txn     *badger.Txn
	written []*streamWrite
}

// set puts a key in the transaction; when the transaction is full it
// commits it and goes on in a new one.
func (g *groupTxn) set(w *streamWrite, k, v []byte) error {
	err := g.txn.Set(k, v)
	if errors.Is(err, badger.ErrTxnTooBig) && len(g.written) > 0 {
		g.commit()
		g.txn = g.db.NewTransaction(true)
		if w.err != nil {
			// The stream's earlier chunks were in the transaction that
			// failed: a later one would leave a hole.
			return w.err
		}
		err = g.txn.Set(k, v)
	}
	if err == nil && !w.inTxn {
		w.inTxn = true
		g.written = append(g.written, w)
	}
	return err
}

// commit commits the transaction (its streams' first error, if it
// fails); the caller starts the next or is done.
func (g *groupTxn) commit() {
	g.commits.Add(1)
	err := g.txn.Commit()
	g.txn.Discard()
	for _, w := range g.written {
		if err != nil && w.err == nil {
			w.err = err
		}
		w.inTxn = false
	}
	g.written = g.written[:0]
}

// stream puts a stream's events in chunks past its head: the head the
// group writer left (or the last key's), skipping events at or under it
// (already there: an event never changes) and refusing a hole (errGap).
// The caller holds the partition's lk shared.
func (g *groupTxn) stream(w *streamWrite) error {
	p, e := w.p, w.e
	prefix := eventPrefix(p.n, p.inc, w.stream)
	var c chunk
	put := func(final bool) error {
		if c.n == 0 {
			return nil
		}
		k := eventKey(prefix, c.last.seq)
		if final {
			// The last key may take the prefix's spare room: no copy
			// (a stream has one chunk in most groups).
			k = binary.BigEndian.AppendUint64(prefix, c.last.seq)
		}
		return g.set(w, k, c.value())
	}
	h := e.head
	if !e.headOK || e.headInc != p.inc {
		var err error
		if h, err = getHead(g.txn, prefix); err != nil {
			return err
		}
	}
	for _, r := range w.reqs {
		if r.inc != p.inc {
			// The partition was dropped since (not owned for a while):
			// its marks are gone and its old data is being deleted.
			continue
		}
		evs := r.evs
		for len(evs) > 0 && evs[0].Sequence <= h.seq {
			evs = evs[1:]
		}
		if len(evs) == 0 {
			continue
		}
		if evs[0].Sequence != h.seq+1 {
			return fmt.Errorf("%w: stream %q: local head %d, write from %d", errGap, w.stream, h.seq, evs[0].Sequence)
		}
		p.dirty.Store(true)
		for i := range evs {
			ev := &evs[i]
			if ev.Sequence != h.seq+1 || ev.Position <= h.pos {
				return fmt.Errorf("ownedcopy: stream %q: event %d at position %d after %d at %d", w.stream, ev.Sequence, ev.Position, h.seq, h.pos)
			}
			c.add(ev)
			h = c.last
			if c.full() {
				if err := put(false); err != nil {
					return err
				}
			}
		}
	}
	if err := put(true); err != nil {
		return err
	}
	w.head = h
	return nil
}
