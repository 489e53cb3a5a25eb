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
