package ownedcopy

import (
	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
)

// CloseDB closes the local copy's Badger under the Store, as a failing
// disk would: every later local read and write fails.
func CloseDB(s *Store) error { return s.db.Close() }

// flushed waits for a stream's queued local writes and returns its
// partition.
func flushed(s *Store, stream string) *part {
	p := s.parts[s.inner.PartitionOf(stream)]
	p.mu.Lock()
	e := p.streams[stream]
	p.mu.Unlock()
	if e != nil {
		s.flush(e)
	}
	return p
}

// LocalHead is a stream's local head (0: nothing local) once its queued
// local writes are done.
func LocalHead(s *Store, stream string) (uint64, error) {
	p := flushed(s, stream)
	h, err := s.localHead(p, stream)
	return h.seq, err
}

// EventKeys is how many keys hold a stream's local events (chunks), once
// its queued local writes are done.
func EventKeys(s *Store, stream string) (int, error) {
	p := flushed(s, stream)
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		prefix := eventPrefix(p.n, p.inc, stream)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// Commits is how many transactions the group writer committed.
func Commits(s *Store) uint64 { return s.w.commits.Load() }

// Marked says whether a stream is marked complete under its partition's
// current fence.
func Marked(s *Store, stream string) bool {
	p := s.parts[s.inner.PartitionOf(stream)]
	f, ok := s.inner.Holds(p.n)
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.streams[stream]
	return e != nil && e.marked && e.mark == f
}

// SetAfterCatchUpRead makes hook run when a catch-up has read the log
// and written nothing yet. Set it before the reads.
func SetAfterCatchUpRead(s *Store, hook func(stream string)) { s.afterCatchUpRead = hook }

var _ = journal.ErrClosed
