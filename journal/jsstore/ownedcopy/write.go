package ownedcopy

import (
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
)

// The local writes of acknowledged appends are group-committed: one
// goroutine takes every write waiting and commits them in one Badger
// transaction. Badger makes every new transaction wait until the commits
// before it are applied (its read timestamp's watermark), so a
// transaction per append serialised every append of the node behind
// Badger's write pipeline: appends through the copy ran at a third of
// the log's rate (docs/benchmarks.md, "Recovery from the local copy").
// Each append still returns only once its events are written locally.

// writer is the group writer's queue.
type writer struct {
	mu     sync.Mutex
	queue  []*writeReq
	closed bool
	wake   chan struct{} // capacity 1
	done   chan struct{} // closed when the writer has stopped
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
	done   chan struct{}
}

// writeLocal writes an acknowledged append's events to the local copy
// through the group writer and waits for the commit. It holds the
// stream's write lock, so one stream has at most one write in a group.
func (s *Store) writeLocal(p *part, e *entry, stream string, evs []journal.Event) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return journal.ErrClosed
	}
	p.lk.RLock()
	defer p.lk.RUnlock()
	r := &writeReq{p: p, e: e, inc: p.inc, stream: stream, evs: evs, done: make(chan struct{})}
	s.w.mu.Lock()
	if s.w.closed {
		s.w.mu.Unlock()
		return journal.ErrClosed
	}
	s.w.queue = append(s.w.queue, r)
	s.w.mu.Unlock()
	select {
	case s.w.wake <- struct{}{}:
	default:
	}
	<-r.done
	if r.err != nil && !errors.Is(r.err, errGap) {
		s.localErrs.Add(1)
		s.log.Warn("local copy not written", "shard", p.n, "stream", stream, "err", r.err)
	}
	return r.err
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
// and answers each. The requesters hold their streams' write locks,
// closeMu and their partitions' lk shared, so the entries' heads and the
// incarnations are stable.
func (s *Store) commitGroup(batch []*writeReq) {
	defer func() {
		for _, r := range batch {
			if r.err != nil {
				r.e.headOK = false
			}
			close(r.done)
		}
	}()
	if s.db.IsClosed() {
		for _, r := range batch {
			r.err = journal.ErrClosed
		}
		return
	}
	txn := s.db.NewTransaction(true)
	var in []*writeReq // requests whose writes are in txn
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
	}
	for _, r := range batch {
		err := s.add(txn, r)
		if errors.Is(err, badger.ErrTxnTooBig) && len(in) > 0 {
			// Commit the group so far, then this one alone. Events it
			// left in the full transaction lie past its head: unread,
			// and written again.
			commit()
			txn = s.db.NewTransaction(true)
			err = s.add(txn, r)
		}
		if err != nil {
			r.err = err
			continue
		}
		in = append(in, r)
	}
	if len(in) > 0 {
		commit()
	} else {
		txn.Discard()
	}
}

// add puts a request's events and its stream's new head in txn.
func (s *Store) add(txn *badger.Txn, r *writeReq) error {
	hk := headKey(r.p.n, r.inc, r.stream)
	h := r.e.head
	if !r.e.headOK || r.e.headInc != r.inc {
		var err error
		if h, err = getHead(txn, hk); err != nil {
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
	prefix := eventPrefix(r.p.n, r.inc, r.stream)
	for i := range evs {
		ev := &evs[i]
		if ev.Sequence != h.seq+1 || ev.Position <= h.pos {
			return fmt.Errorf("ownedcopy: stream %q: event %d at position %d after %d at %d", r.stream, ev.Sequence, ev.Position, h.seq, h.pos)
		}
		if err := txn.Set(eventKey(prefix, ev.Sequence), encodeEvent(ev)); err != nil {
			return err
		}
		h = head{seq: ev.Sequence, pos: ev.Position, time: ev.Time.UnixNano()}
	}
	r.next = h
	return txn.Set(hk, h.encode())
}
