package badgerstore

import (
	"context"
	"errors"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore/internal/codec"
)

// Idempotent looks up the idempotency record of key in stream.
func (s *Store) Idempotent(ctx context.Context, stream, key string) (journal.AppendResult, bool, error) {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return journal.AppendResult{}, false, err
	}
	if key == "" {
		return journal.AppendResult{}, false, nil
	}
	if err := ctx.Err(); err != nil {
		return journal.AppendResult{}, false, err
	}
	if err := s.beginRead(); err != nil {
		return journal.AppendResult{}, false, err
	}
	defer s.endRead()
	durable := s.lastPos.Load()
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	item, err := txn.Get(codec.IdemKey(nil, stream, key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return journal.AppendResult{}, false, nil
	}
	if err != nil {
		return journal.AppendResult{}, false, translate(err)
	}
	var r codec.Idem
	if err := item.Value(func(v []byte) (err error) { r, err = codec.DecodeIdem(v); return err }); err != nil {
		return journal.AppendResult{}, false, &journal.CorruptError{Stream: stream, Err: err}
	}
	if r.LastPos > durable {
		// Committed but not yet acknowledged: a crash could still take it
		// back, so it does not count yet.
		return journal.AppendResult{}, false, nil
	}
	return journal.AppendResult{FirstSequence: r.FirstSeq, LastSequence: r.LastSeq, FirstPosition: r.FirstPos,
		LastPosition: r.LastPos, Duplicate: true, Reply: r.Reply}, true, nil
}
