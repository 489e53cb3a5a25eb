package badgerstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/badgerstore/internal/codec"
)

// checkEvery is how many events an iterator yields between checks of its
// context and of Close.
const checkEvery = 256

// Read yields the events of a stream with Sequence >= from, in order, up to
// limit (<= 0: no limit). It reads a consistent Badger snapshot taken when
// iteration starts and yields only acknowledged events.
func (s *Store) Read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[journal.Event, error] {
	return func(yield func(journal.Event, error) bool) {
		if _, _, err := journal.ParseStream(stream); err != nil {
			yield(journal.Event{}, err)
			return
		}
		if err := s.beginRead(); err != nil {
			yield(journal.Event{}, err)
			return
		}
		defer s.endRead()
		durable := s.lastPos.Load()
		txn := s.db.NewTransaction(false)
		defer txn.Discard()
		// Start past events deleted under a snapshot: seeking into deleted
		// keys would walk over every one of them.
		m, _, err := streamMeta(txn, stream)
		if err != nil {
			yield(journal.Event{}, err)
			return
		}
		from = max(from, m.Deleted+1)
		prefix := codec.EventPrefix(nil, stream)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		var d codec.Decoder
		n := 0
		for it.Seek(codec.EventKey(prefix[:0:0], stream, max(from, 1))); it.Valid(); it.Next() {
			if n%checkEvery == checkEvery-1 {
				if err := s.iterErr(ctx); err != nil {
					yield(journal.Event{}, err)
					return
				}
			}
			item := it.Item()
			seq, err := codec.EventKeySeq(item.Key())
			if err != nil {
				yield(journal.Event{}, &journal.CorruptError{Stream: stream, Err: err})
				return
			}
			var ev journal.Event
			if err := item.Value(func(v []byte) error { return d.DecodeEvent(v, &ev) }); err != nil {
				yield(journal.Event{}, corrupt(stream, seq, 0, item, err))
				return
			}
			if ev.Position > durable {
				return // committed but not yet acknowledged
			}
			ev.Stream, ev.Sequence = stream, seq
			if !yield(ev, nil) {
				return
			}
			n++
			if limit > 0 && n >= limit {
				return
			}
		}
	}
}

// corrupt builds the error for an event that does not decode, recovering
// the position from the envelope header when that part is intact.
func corrupt(stream string, seq, pos uint64, item *badger.Item, err error) error {
	if pos == 0 && item != nil {
		_ = item.Value(func(v []byte) error {
			if p, perr := codec.EventPosition(v); perr == nil {
				pos = p
			}
			return nil
		})
	}
	if !errors.Is(err, codec.ErrValue) {
		return translate(err)
	}
	return &journal.CorruptError{Stream: stream, Sequence: seq, Position: pos, Err: err}
}

func (s *Store) iterErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosing() {
		return journal.ErrClosed
	}
	return nil
}

// ReadAll yields the events of the global log (partition 0, the only one)
// selected by f with Position >= from, in global order, up to limit (<= 0:
// no limit). Events deleted because a snapshot covered them are skipped.
func (s *Store) ReadAll(ctx context.Context, partition int, from uint64, f journal.Filter, limit int) iter.Seq2[journal.Event, error] {
	return func(yield func(journal.Event, error) bool) {
		if err := checkPartition(partition); err != nil {
			yield(journal.Event{}, err)
			return
		}
		var prefix []byte
		switch {
		case f.Kind != "" && f.Tag != "":
			yield(journal.Event{}, fmt.Errorf("%w: filter sets both Kind and Tag", journal.ErrInvalid))
			return
		case f.Kind != "":
			if err := validKind(f.Kind); err != nil {
				yield(journal.Event{}, err)
				return
			}
			prefix = codec.IndexPrefix(nil, codec.PrefixKind, f.Kind)
		case f.Tag != "":
			if strings.IndexByte(f.Tag, 0) >= 0 {
				yield(journal.Event{}, fmt.Errorf("%w: tag holds a NUL byte", journal.ErrInvalid))
				return
			}
			prefix = codec.IndexPrefix(nil, codec.PrefixTag, f.Tag)
		default:
			prefix = []byte{codec.PrefixLog}
		}
		if err := s.beginRead(); err != nil {
			yield(journal.Event{}, err)
			return
		}
		defer s.endRead()
		from = max(from, 1)
		durable := s.lastPos.Load()
		if from > durable {
			return
		}
		txn := s.db.NewTransaction(false)
		defer txn.Discard()
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		r := logReader{s: s, txn: txn, global: len(prefix) == 1}
		defer r.close()
		seek := binaryAppend(bytes.Clone(prefix), from)
		n := 0
		var chunk []byte
		for it.Seek(seek); it.Valid(); it.Next() {
			item := it.Item()
			lastPos, err := chunkLastPos(item.Key(), prefix)
			if err != nil {
				yield(journal.Event{}, &journal.CorruptError{Stream: "(global log)", Err: err})
				return
			}
			var cr codec.ChunkReader
			// Copied: the chunk is read while other lookups run.
			err = item.Value(func(v []byte) error {
				chunk = append(chunk[:0], v...)
				var cerr error
				cr, cerr = codec.NewChunkReader(chunk)
				return cerr
			})
			if err != nil {
				yield(journal.Event{}, corrupt("(global log)", 0, lastPos, nil, err))
				return
			}
			for {
				pos, stream, seq, ok, err := cr.Next()
				if err != nil {
					yield(journal.Event{}, corrupt("(global log)", 0, lastPos, nil, err))
					return
				}
				if !ok {
					break
				}
				if pos < from {
					continue
				}
				if pos > durable {
					return
				}
				if r.global && r.prev != 0 && pos != r.prev+1 {
					yield(journal.Event{}, &journal.CorruptError{Stream: "(global log)", Position: r.prev + 1,
						Err: fmt.Errorf("global log jumps from %d to %d", r.prev, pos)})
					return
				}
				r.prev = pos
				ev, found, err := r.event(stream, seq, pos)
				if err != nil {
					yield(journal.Event{}, err)
					return
				}
				if !found {
					continue
				}
				if n%checkEvery == checkEvery-1 {
					if err := s.iterErr(ctx); err != nil {
						yield(journal.Event{}, err)
						return
					}
				}
				if !yield(ev, nil) {
					return
				}
				n++
				if limit > 0 && n >= limit {
					return
				}
			}
			if lastPos >= durable {
				return
			}
		}
	}
}

// logReader fetches the events an index chunk refers to.
type logReader struct {
	s      *Store
	txn    *badger.Txn
	d      codec.Decoder
	key    []byte
	stream string
	global bool
	prev   uint64
	it     *badger.Iterator
	// deleted caches, per stream met with a missing event, how far its
	// events were deleted under a snapshot.
	deleted map[string]uint64
	// covered caches, per stream, the snapshot sequence that explains
	// missing (deleted) events.
	covered map[string]uint64
}

func (r *logReader) event(streamB []byte, seq, pos uint64) (journal.Event, bool, error) {
	if r.stream != string(streamB) {
		r.stream = string(streamB)
	}
	stream := r.stream
	r.key = codec.EventKey(r.key[:0], stream, seq)
	if deleted, ok := r.deleted[stream]; ok && seq <= deleted {
		return journal.Event{}, false, nil // deleted under a snapshot
	}
	item, err := r.get(r.key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		deleted, derr := r.deletedThrough(stream)
		if derr != nil {
			return journal.Event{}, false, derr
		}
		if seq <= deleted {
			return journal.Event{}, false, nil
		}
		return journal.Event{}, false, &journal.CorruptError{Stream: stream, Sequence: seq, Position: pos,
			Err: errors.New("the global log refers to a missing event")}
	}
	if err != nil {
		return journal.Event{}, false, translate(err)
	}
	var ev journal.Event
	if err := item.Value(func(v []byte) error { return r.d.DecodeEvent(v, &ev) }); err != nil {
		return journal.Event{}, false, corrupt(stream, seq, pos, nil, err)
	}
	if ev.Position != pos {
		return journal.Event{}, false, &journal.CorruptError{Stream: stream, Sequence: seq, Position: pos,
			Err: fmt.Errorf("event records position %d", ev.Position)}
	}
	ev.Stream, ev.Sequence = stream, seq
	return ev, true, nil
}

// get finds an event through one iterator kept for the whole read: a Seek
// reuses the table iterators that each txn.Get would allocate anew, and an
// event that follows the previous one in its stream is just the next key.
func (r *logReader) get(key []byte) (*badger.Item, error) {
	if r.it == nil {
		r.it = r.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{codec.PrefixEvent}})
	}
	// Step only when the key is the successor, in the same stream, of the
	// one the iterator is on: a blind Next could walk into another
	// stream's deleted events.
	if r.it.Valid() && successor(r.it.Item().Key(), key) {
		r.it.Next()
	}
	if !r.it.Valid() || !bytes.Equal(r.it.Item().Key(), key) {
		r.it.Seek(key)
		if !r.it.Valid() || !bytes.Equal(r.it.Item().Key(), key) {
			return nil, badger.ErrKeyNotFound
		}
	}
	return r.it.Item(), nil
}

// successor reports whether event key next is cur's stream with the next
// sequence.
func successor(cur, next []byte) bool {
	n := len(next) - 8
	if len(cur) != len(next) || n < 0 || !bytes.Equal(cur[:n], next[:n]) {
		return false
	}
	return binary.BigEndian.Uint64(cur[n:])+1 == binary.BigEndian.Uint64(next[n:])
}

func (r *logReader) close() {
	if r.it != nil {
		r.it.Close()
	}
}

// deletedThrough returns (and caches) how far a stream's events were
// deleted under a snapshot.
func (r *logReader) deletedThrough(stream string) (uint64, error) {
	if d, ok := r.deleted[stream]; ok {
		return d, nil
	}
	m, _, err := streamMeta(r.txn, stream)
	if err != nil {
		return 0, err
	}
	if r.deleted == nil {
		r.deleted = make(map[string]uint64)
	}
	r.deleted[stream] = m.Deleted
	return m.Deleted, nil
}

// streamMeta reads a stream's metadata record.
func streamMeta(txn *badger.Txn, stream string) (codec.StreamMeta, bool, error) {
	item, err := txn.Get(codec.StreamKey(nil, stream))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return codec.StreamMeta{}, false, nil
	}
	if err != nil {
		return codec.StreamMeta{}, false, translate(err)
	}
	var m codec.StreamMeta
	if err := item.Value(func(v []byte) (err error) { m, err = codec.DecodeStreamMeta(v); return err }); err != nil {
		return codec.StreamMeta{}, false, &journal.CorruptError{Stream: stream, Err: err}
	}
	return m, true, nil
}

func chunkLastPos(key, prefix []byte) (uint64, error) {
	if len(key) != len(prefix)+8 || !bytes.HasPrefix(key, prefix) {
		return 0, fmt.Errorf("%w: index key %x", codec.ErrKey, key)
	}
	var p uint64
	for _, b := range key[len(prefix):] {
		p = p<<8 | uint64(b)
	}
	return p, nil
}

func binaryAppend(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func validKind(kind string) error {
	if strings.IndexByte(kind, '/') >= 0 || strings.IndexByte(kind, 0) >= 0 {
		return fmt.Errorf("%w: kind %q holds '/' or NUL", journal.ErrInvalid, kind)
	}
	return nil
}

// Info describes one stream. An unknown stream has zero LastSequence.
func (s *Store) Info(ctx context.Context, stream string) (journal.StreamInfo, error) {
	info := journal.StreamInfo{Stream: stream}
	if _, _, err := journal.ParseStream(stream); err != nil {
		return info, err
	}
	if err := ctx.Err(); err != nil {
		return info, err
	}
	if err := s.beginRead(); err != nil {
		return info, err
	}
	defer s.endRead()
	durable := s.lastPos.Load()
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	m, found, err := streamMeta(txn, stream)
	if err != nil || !found {
		return info, err
	}
	info.Tombstoned = m.Tombstoned
	info.LastSequence = m.LastSeq
	if m.LastTime != 0 {
		info.Last = time.Unix(0, m.LastTime)
	}
	if m.Created != 0 {
		info.First = time.Unix(0, m.Created)
	}
	// The last acknowledged event: walk back over any not yet acknowledged.
	prefix := codec.EventPrefix(nil, stream)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	var d codec.Decoder
	var last uint64
	for it.Seek(codec.EventKey(nil, stream, math.MaxUint64)); it.Valid(); it.Next() {
		item := it.Item()
		seq, err := codec.EventKeySeq(item.Key())
		if err != nil {
			it.Close()
			return info, &journal.CorruptError{Stream: stream, Err: err}
		}
		var ev journal.Event
		if err := item.Value(func(v []byte) error { return d.DecodeEvent(v, &ev) }); err != nil {
			it.Close()
			return info, corrupt(stream, seq, 0, item, err)
		}
		if ev.Position > durable {
			continue
		}
		last = seq
		if seq > info.LastSequence {
			info.LastSequence, info.Last = seq, ev.Time
		}
		break
	}
	it.Close()
	if last == 0 {
		if info.LastSequence == 0 && !info.Tombstoned && info.First.IsZero() {
			// Created by a commit that is not yet acknowledged.
			return journal.StreamInfo{Stream: stream}, nil
		}
		return info, nil
	}
	if last > m.Deleted {
		info.Count = last - m.Deleted
	}
	return info, nil
}

// Streams yields the ids of the streams of one kind ("" for all), in lexical
// order, including tombstoned ones.
func (s *Store) Streams(ctx context.Context, kind string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if err := validKind(kind); err != nil {
			yield("", err)
			return
		}
		if err := s.beginRead(); err != nil {
			yield("", err)
			return
		}
		defer s.endRead()
		txn := s.db.NewTransaction(false)
		defer txn.Discard()
		prefix := codec.StreamsPrefix(nil, kind)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		n := 0
		for it.Seek(prefix); it.Valid(); it.Next() {
			if n++; n%checkEvery == 0 {
				if err := s.iterErr(ctx); err != nil {
					yield("", err)
					return
				}
			}
			stream, err := codec.ParseStreamKey(it.Item().Key())
			if err != nil {
				yield("", &journal.CorruptError{Stream: "(stream list)", Err: err})
				return
			}
			if !yield(stream, nil) {
				return
			}
		}
	}
}

// LoadSnapshot returns the stream's latest snapshot, or journal.ErrNotFound.
func (s *Store) LoadSnapshot(ctx context.Context, stream string) (journal.Snapshot, error) {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return journal.Snapshot{}, err
	}
	if err := ctx.Err(); err != nil {
		return journal.Snapshot{}, err
	}
	if err := s.beginRead(); err != nil {
		return journal.Snapshot{}, err
	}
	defer s.endRead()
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	item, err := txn.Get(codec.SnapshotKey(nil, stream))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return journal.Snapshot{}, fmt.Errorf("snapshot of %q: %w", stream, journal.ErrNotFound)
	}
	if err != nil {
		return journal.Snapshot{}, translate(err)
	}
	snap := journal.Snapshot{Stream: stream}
	err = item.Value(func(v []byte) error {
		seq, ts, data, err := codec.DecodeSnapshot(v)
		snap.Sequence, snap.Time, snap.Data = seq, time.Unix(0, ts), data
		return err
	})
	if err != nil {
		return journal.Snapshot{}, &journal.CorruptError{Stream: stream, Err: fmt.Errorf("snapshot: %w", err)}
	}
	return snap, nil
}
