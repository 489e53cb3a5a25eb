package ownedcopy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
)

// The local writes of acknowledged appends are group-committed and
// written behind: an append queues its events for the local copy and
// returns once the log acknowledged it; one goroutine takes every write
// waiting and commits them in one Badger transaction. Anything that uses
// a stream's local data (a read, a catch-up, a snapshot) first waits for
// the stream's queued writes (Store.flush), and a queued write that fails
// drops the stream's mark before it counts as done, so a read never
// trusts a copy that misses an acknowledged event. Waiting for the local
// write inside each append nearly doubled its latency under load (three hand-
// offs between goroutines on a busy machine) and cost 32-43 % of a node's
// append rate (docs/benchmarks.md, "The store's appends beside the
// ceilings"); a transaction per append, before the group writer,
// serialised every append behind Badger's write pipeline.

// writer is the group writer's queue.
type writer struct {
	mu       sync.Mutex
	queue    []*writeReq
	closed   bool
	queued   uint64        // the last request's number (they count from 1)
	answered uint64        // requests up to this number are answered
	answers  *sync.Cond    // on mu: answered moved
	wake     chan struct{} // capacity 1
	done     chan struct{} // closed when the writer has stopped
}

// writeReq is one stream's events to write locally.
type writeReq struct {
	p      *part
	e      *entry
	inc    uint64
	stream string
	evs    []journal.Event
	next   head
	err    error
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
	s.w.queue = append(s.w.queue, r)
	s.w.mu.Unlock()
	e.pending = r.n
	select {
	case s.w.wake <- struct{}{}:
	default:
	}
	return nil
}

// flushLocked waits until the stream's queued local writes are done
// (written, or failed and its mark dropped). The writer answers in queue
// order, so the last one queued is the one to wait for (a number and a
// condition rather than a channel per write: one allocation less on
// every append). The caller holds e.wmu (no write can be queued
// meanwhile) and no other lock.
func (s *Store) flushLocked(e *entry) {
	if e.pending == 0 {
		return
	}
	s.w.mu.Lock()
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
	for range s.w.wake {
		for {
			s.w.mu.Lock()
			batch, closed := s.w.queue, s.w.closed
			s.w.queue = nil
			s.w.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			s.commitGroup(batch)
		}
	}
}

// stopWriter refuses new writes, lets the writer finish those queued and
// waits for it.
func (s *Store) stopWriter() {
	s.w.mu.Lock()
	s.w.closed = true
	s.w.mu.Unlock()
	select {
	case s.w.wake <- struct{}{}:
	default:
	}
	<-s.w.done
}

// commitGroup writes a group of requests in as few transactions as fit
// and answers each, in order. A stream may have several requests in a
// group (an append does not wait for its local write); each sees the
// head its predecessors left. Until a request is answered nothing else
// touches its entry's head (flush waits for it under e.wmu).
func (s *Store) commitGroup(batch []*writeReq) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	locked := map[*part]bool{} // partitions whose lk this holds shared
	defer func() {
		for p := range locked {
			p.lk.RUnlock()
		}
		for _, r := range batch {
			if r.err != nil {
				r.e.headOK = false
				if !errors.Is(r.err, errGap) && !errors.Is(r.err, journal.ErrClosed) {
					s.localErrs.Add(1)
					s.log.Warn("local copy not written", "shard", r.p.n, "stream", r.stream, "err", r.err)
				}
			}
			r.p.mu.Lock()
			if r.err != nil {
				// The copy misses an acknowledged event: no local
				// answer for this stream until a catch-up.
				r.e.marked = false
				r.e.gen++
			}
			r.e.refs--
			r.p.mu.Unlock()
		}
		s.w.mu.Lock()
		s.w.answered = batch[len(batch)-1].n
		s.w.answers.Broadcast()
		s.w.mu.Unlock()
	}()
	if s.dbClosed || s.db.IsClosed() {
		for _, r := range batch {
			r.err = journal.ErrClosed
		}
		return
	}
	txn := s.db.NewTransaction(true)
	var in []*writeReq           // requests whose writes are in txn
	running := map[*entry]head{} // heads as txn leaves them
	commit := func() {
		err := txn.Commit()
		txn.Discard()
		for _, r := range in {
			if r.err = err; err == nil {
				r.e.head, r.e.headInc, r.e.headOK = r.next, r.inc, true
				if t := r.next.time; t > r.e.last.Load() {
					r.e.last.Store(t)
				}
			}
		}
		in = nil
		clear(running)
	}
	for _, r := range batch {
		if !locked[r.p] {
			r.p.lk.RLock()
			locked[r.p] = true
		}
		if r.inc != r.p.inc {
			// The partition was dropped since (not owned for a while):
			// its marks are gone and its old data is being deleted.
			continue
		}
		h, ok := running[r.e]
		err := s.add(txn, r, h, ok)
		if errors.Is(err, badger.ErrTxnTooBig) && len(in) > 0 {
			// Commit the group so far, then this one alone. Events it
			// left in the full transaction lie past its head: unread,
			// and written again.
			commit()
			txn = s.db.NewTransaction(true)
			err = s.add(txn, r, head{}, false)
		}
		if err != nil {
			r.err = err
			delete(running, r.e) // the next of this stream re-reads its head
			continue
		}
		running[r.e] = r.next
		in = append(in, r)
	}
	if len(in) > 0 {
		commit()
	} else {
		txn.Discard()
	}
}

// add puts a request's events in txn and sets r.next to the head they
// leave; h is the head an earlier request of the stream left in txn, if
// known.
func (s *Store) add(txn *badger.Txn, r *writeReq, h head, known bool) error {
	prefix := eventPrefix(r.p.n, r.inc, r.stream)
	if !known {
		h = r.e.head
	}
	if !known && (!r.e.headOK || r.e.headInc != r.inc) {
		var err error
		if h, err = getHead(txn, prefix); err != nil {
			return err
		}
	}
	evs := r.evs
	for len(evs) > 0 && evs[0].Sequence <= h.seq {
		evs = evs[1:]
	}
	r.next = h
	if len(evs) == 0 {
		return nil
	}
	if evs[0].Sequence != h.seq+1 {
		return fmt.Errorf("%w: stream %q: local head %d, write from %d", errGap, r.stream, h.seq, evs[0].Sequence)
	}
	r.p.dirty.Store(true)
	for i := range evs {
		ev := &evs[i]
		if ev.Sequence != h.seq+1 || ev.Position <= h.pos {
			return fmt.Errorf("ownedcopy: stream %q: event %d at position %d after %d at %d", r.stream, ev.Sequence, ev.Position, h.seq, h.pos)
		}
		k := eventKey(prefix, ev.Sequence)
		if i == len(evs)-1 {
			// The last key may take the prefix's spare room: no copy
			// (the usual append has one event).
			k = binary.BigEndian.AppendUint64(prefix, ev.Sequence)
		}
		if err := txn.Set(k, encodeEvent(ev)); err != nil {
			return err
		}
		h = head{seq: ev.Sequence, pos: ev.Position, time: ev.Time.UnixNano()}
	}
	r.next = h
	return nil
}
