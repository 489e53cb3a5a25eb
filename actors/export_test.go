package actors

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// RecoverForBench recovers a new entity of kind k with the given id, as the
// runtime does on an entity's first message.
func RecoverForBench(rt *Runtime, k Behavior, id string) error {
	return k.newEntity(rt, id).recover(context.Background())
}

// SetSkipSaveEvery changes how often a projection that applies nothing
// saves its checkpoint, until the returned func restores it.
func SetSkipSaveEvery(d time.Duration) (restore func()) {
	old := skipSaveEvery
	skipSaveEvery = d
	return func() { skipSaveEvery = old }
}

// StoredCheckpoint is a projection's checkpoint of a partition as its read
// store holds it (0: none yet).
func StoredCheckpoint(rt *Runtime, projection string, part int) (uint64, error) {
	var pos uint64
	err := rt.cfg.ReadStore.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(checkpointKey(projection, part))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { pos = binary.BigEndian.Uint64(v); return nil })
	})
	return pos, err
}

// RowCacheStats reports a projection's row cache lookups that found a row
// and all its lookups (ok=false: the projection has no row cache).
func RowCacheStats(rt *Runtime, projection string) (hits, lookups uint64, ok bool) {
	rt.mu.Lock()
	p := rt.projections[projection]
	rt.mu.Unlock()
	if p == nil || p.rows == nil {
		return 0, 0, false
	}
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	return p.rows.hits, p.rows.all, true
}

// CombinedStats reports a read model's committed transactions, the
// partitions' batches they applied, the batches that failed, and the
// batches waiting now.
func CombinedStats(rt *Runtime, projection string) (txns, batches, failed uint64, waiting int) {
	rt.mu.Lock()
	p := rt.projections[projection]
	rt.mu.Unlock()
	p.qmu.Lock()
	waiting = len(p.queue)
	p.qmu.Unlock()
	return p.txns.Load(), p.batches.Load(), p.failed.Load(), waiting
}
