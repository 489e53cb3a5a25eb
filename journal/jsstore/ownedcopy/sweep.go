package ownedcopy

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// sweep runs until Close: first it deletes what earlier drops left (an
// incarnation below the partition's current one), then every so often it
// drops the local data of partitions not owned for Config.DropAfter.
func (s *Store) sweep() {
	defer s.wg.Done()
	for _, p := range s.parts {
		if !s.deleteOld(p) {
			return
		}
	}
	if s.cfg.DropAfter < 0 {
		return
	}
	t := time.NewTicker(min(max(s.cfg.DropAfter/4, 10*time.Millisecond), 15*time.Second))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		for _, p := range s.parts {
			if _, owned := s.inner.Holds(p.n); owned {
				p.mu.Lock()
				p.lastOwned = now
				p.mu.Unlock()
				continue
			}
			p.mu.Lock()
			due := now.Sub(p.lastOwned) >= s.cfg.DropAfter
			p.mu.Unlock()
			if due && p.dirty.Load() {
				s.drop(p)
			}
		}
	}
}

// Drop drops a partition's local data now if it is not owned, and says
// whether it did. The sweeper calls it; tests and operators may too.
func (s *Store) Drop(partition int) bool {
	if partition < 0 || partition >= len(s.parts) {
		return false
	}
	return s.drop(s.parts[partition])
}

// drop moves a partition not owned to a new incarnation (readers and
// writers from then on see an empty copy; one small write under the
// partition's exclusive lock), then deletes the old keys without it.
func (s *Store) drop(p *part) bool {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return false
	}
	p.lk.Lock()
	if _, owned := s.inner.Holds(p.n); owned {
		p.lk.Unlock()
		return false
	}
	next := p.inc + 1
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(incKey(p.n), binary.BigEndian.AppendUint64(nil, next))
	})
	if err != nil {
		p.lk.Unlock()
		s.localErrs.Add(1)
		s.log.Warn("local copy of a partition not dropped", "shard", p.n, "err", err)
		return false
	}
	p.inc = next
	p.dirty.Store(false)
	p.mu.Lock()
	p.forget()
	p.mu.Unlock()
	p.lk.Unlock()
	s.log.Debug("local copy of a partition dropped", "shard", p.n)
	s.deleteOldLocked(p, next)
	return true
}

// deleteOld deletes the keys of p's earlier incarnations; false when the
// Store is closing.
func (s *Store) deleteOld(p *part) bool {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.dbClosed {
		return false
	}
	p.lk.RLock()
	inc := p.inc
	p.lk.RUnlock()
	return s.deleteOldLocked(p, inc)
}

// deleteOldLocked deletes, in batches, every data key of partition p
// whose incarnation is below inc. The caller holds closeMu shared.
func (s *Store) deleteOldLocked(p *part, inc uint64) bool {
	prefix := partPrefix(p.n)
	upto := binary.BigEndian.AppendUint64(bytes.Clone(prefix), inc)
	for {
		select {
		case <-s.stop:
			return false
		default:
		}
		var keys [][]byte
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(keys) < 1000; it.Next() {
				k := it.Item().KeyCopy(nil)
				if bytes.Compare(k, upto) >= 0 {
					break
				}
				keys = append(keys, k)
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err == nil
		}
		wb := s.db.NewWriteBatch()
		for _, k := range keys {
			if err := wb.Delete(k); err != nil {
				break
			}
		}
		if err := wb.Flush(); err != nil {
			s.log.Warn("old local copy not deleted", "shard", p.n, "err", err)
			return true
		}
	}
}
