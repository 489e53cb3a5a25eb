package actors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/journal/badgerstore"
)

// ReadStore is the query side's store: read models and projection
// checkpoints, in a Badger database of its own, apart from the journal. Each
// projection owns the keys under its name; a projection's read-model changes
// and its checkpoint commit in one transaction, so every event takes effect
// exactly once, even across crashes.
type ReadStore struct {
	db *badger.DB
}

// ReadStoreConfig configures OpenReadStore.
type ReadStoreConfig struct {
	// Dir is the database directory (required).
	Dir string
	// ReadOnly opens an existing store without writing (inspection tools).
	ReadOnly bool
	// Logger receives Badger's logs with component=badger-read.
	Logger *slog.Logger
}

// OpenReadStore opens (or creates) a read store.
func OpenReadStore(cfg ReadStoreConfig) (*ReadStore, error) {
	if cfg.Dir == "" {
		return nil, errors.New("actors: ReadStoreConfig.Dir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts := badger.DefaultOptions(cfg.Dir).
		WithLogger(badgerstore.Logger(cfg.Logger, "badger-read")).
		WithReadOnly(cfg.ReadOnly).
		// Read models are rebuilt from the journal if lost; a process
		// crash keeps Badger's unsynced writes in the OS page cache.
		WithSyncWrites(false).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithBlockCacheSize(32 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("actors: open read store %s: %w", cfg.Dir, err)
	}
	return &ReadStore{db: db}, nil
}

// Close closes the store.
func (s *ReadStore) Close() error { return s.db.Close() }

// Key layout: 'm' <projection> 0x00 <key> holds read-model values;
// 'c' <projection> holds the checkpoint (big-endian uint64) of partition 0
// of the log, 'c' <projection> 0x00 <partition, big-endian uint32> that of
// another partition. (A single node's log has one partition, so its keys
// are those from before partitions existed.)
func modelKey(projection, key string) []byte {
	b := make([]byte, 0, 2+len(projection)+len(key))
	b = append(b, 'm')
	b = append(b, projection...)
	b = append(b, 0)
	return append(b, key...)
}

func checkpointKey(projection string, partition int) []byte {
	k := append([]byte{'c'}, projection...)
	if partition == 0 {
		return k
	}
	k = append(k, 0)
	return binary.BigEndian.AppendUint32(k, uint32(partition))
}

// checkpoints reads a projection's checkpoint in each of partitions
// partitions of the log.
func (s *ReadStore) checkpoints(projection string, partitions int) ([]uint64, error) {
	pos := make([]uint64, partitions)
	err := s.db.View(func(txn *badger.Txn) error {
		for p := range pos {
			v, err := readCheckpoint(txn, projection, p)
			if err != nil {
				return err
			}
			pos[p] = v
		}
		return nil
	})
	return pos, err
}

// readCheckpoint reads one checkpoint within txn (0: none yet).
func readCheckpoint(txn *badger.Txn, projection string, partition int) (uint64, error) {
	it, err := txn.Get(checkpointKey(projection, partition))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var pos uint64
	err = it.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("checkpoint of projection %q in partition %d is %d bytes, want 8", projection, partition, len(v))
		}
		pos = binary.BigEndian.Uint64(v)
		return nil
	})
	return pos, err
}

// reset deletes a projection's read model and checkpoints.
func (s *ReadStore) reset(projection string) error {
	if err := s.db.DropPrefix(modelKey(projection, "")); err != nil {
		return err
	}
	if err := s.db.DropPrefix(append(checkpointKey(projection, 0), 0)); err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(checkpointKey(projection, 0)) })
}

// Tx is a read-write view of one projection's read model inside the
// transaction that also advances its checkpoint. Only valid during the Apply
// call it is passed to.
type Tx struct {
	View
	// span is the span of the event being applied (trace.go).
	span trace.SpanContext
}

// Set stores value under key. value must not change afterwards: the
// transaction commits after Apply returns (and the row cache keeps a copy
// of it then).
func (t *Tx) Set(key string, value []byte) error {
	if err := t.txn.Set(modelKey(t.projection, key), value); err != nil {
		return err
	}
	t.rows.wrote(key, row{val: value})
	return nil
}

// SetJSON stores v encoded as JSON under key.
func (t *Tx) SetJSON(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.Set(key, b)
}

// Delete removes key.
func (t *Tx) Delete(key string) error {
	if err := t.txn.Delete(modelKey(t.projection, key)); err != nil {
		return err
	}
	t.rows.wrote(key, row{absent: true})
	return nil
}

// View is a read-only, consistent view of one projection's read model.
type View struct {
	txn        *badger.Txn
	projection string
	// rows, in a projection's writer, are its row cache and this
	// transaction's reads and writes; nil in a query's view.
	rows *txRows
}

// Get returns the value of key, or ok=false when absent. The bytes are a
// copy the caller may keep.
func (v *View) Get(key string) (value []byte, ok bool, err error) {
	value, ok, shared, err := v.lookup(key)
	if shared {
		value = bytes.Clone(value)
	}
	return value, ok, err
}

// GetJSON decodes the JSON value of key into out; ok=false when absent.
func (v *View) GetJSON(key string, out any) (ok bool, err error) {
	b, ok, _, err := v.lookup(key)
	if err != nil || !ok {
		return ok, err
	}
	return true, json.Unmarshal(b, out)
}

// lookup finds key's value: in a projection's writer, in what this
// transaction wrote or read before, then in the row cache, and only then
// in Badger. shared says the bytes are kept (by the transaction or the
// cache) and must not be handed out to be changed.
func (v *View) lookup(key string) (value []byte, ok, shared bool, err error) {
	if r, found := v.rows.find(key); found {
		return r.val, !r.absent, true, nil
	}
	it, err := v.txn.Get(modelKey(v.projection, key))
	absent := errors.Is(err, badger.ErrKeyNotFound)
	switch {
	case absent:
	case err != nil:
		return nil, false, false, err
	default:
		if value, err = it.ValueCopy(nil); err != nil {
			return nil, false, false, err
		}
	}
	if v.rows != nil {
		v.rows.readBadger(key, row{val: value, absent: absent})
		shared = true
	}
	return value, !absent, shared, nil
}

// txRows is a projection writer's transaction's view of its row cache:
// the rows it read from Badger and those it wrote, which go into the
// cache once the transaction has committed (settle).
type txRows struct {
	cache  *rowCache
	read   map[string]row // read from Badger (not found in the cache)
	writes map[string]row // written (Set or Delete)
}

// find returns a row this transaction wrote or read, or the cache's.
func (t *txRows) find(key string) (row, bool) {
	if t == nil {
		return row{}, false
	}
	if r, ok := t.writes[key]; ok {
		return r, true
	}
	if r, ok := t.read[key]; ok {
		return r, true
	}
	return t.cache.get(key)
}

func (t *txRows) readBadger(key string, r row) {
	if t.read == nil {
		t.read = map[string]row{}
	}
	t.read[key] = r
}

func (t *txRows) wrote(key string, r row) {
	if t == nil {
		return
	}
	if t.writes == nil {
		t.writes = map[string]row{}
	}
	t.writes[key] = r
}

// keepReads puts the rows a transaction that did not commit read from
// Badger into the cache: with one writer, they are what Badger holds.
func (t *txRows) keepReads() {
	for k, r := range t.read {
		t.cache.put(k, r)
	}
}

// settle puts the committed transaction's rows into the cache: those it
// read from Badger, as it left them; those it wrote without reading them
// from Badger only where the cache holds them already (a row written once
// and never read, like a statement's line, would only crowd it).
func (t *txRows) settle() {
	for k, r := range t.read {
		if _, wrote := t.writes[k]; !wrote {
			t.cache.put(k, r)
		}
	}
	for k, r := range t.writes {
		r.val = bytes.Clone(r.val) // the caller's bytes: Set's value
		if _, read := t.read[k]; read {
			t.cache.put(k, r)
		} else {
			t.cache.update(k, r)
		}
	}
}

// KV is one key and value of a Scan.
type KV struct {
	Key   string
	Value []byte
}

// Scan yields the keys with the given prefix in ascending order, starting
// after the key `after` ("" from the start), at most limit (<= 0: all).
func (v *View) Scan(prefix, after string, limit int) iter.Seq2[KV, error] {
	return v.scan(prefix, after, limit, false)
}

// ScanReverse is Scan in descending order, starting before `before` ("":
// from the end).
func (v *View) ScanReverse(prefix, before string, limit int) iter.Seq2[KV, error] {
	return v.scan(prefix, before, limit, true)
}

func (v *View) scan(prefix, from string, limit int, reverse bool) iter.Seq2[KV, error] {
	return func(yield func(KV, error) bool) {
		full := modelKey(v.projection, prefix)
		opts := badger.DefaultIteratorOptions
		opts.Prefix = full
		opts.Reverse = reverse
		it := v.txn.NewIterator(opts)
		defer it.Close()
		base := len(modelKey(v.projection, ""))
		var seek []byte
		switch {
		case from != "":
			seek = modelKey(v.projection, from)
		case reverse:
			seek = append(bytes.Clone(full), 0xff, 0xff, 0xff, 0xff)
		default:
			seek = full
		}
		n := 0
		for it.Seek(seek); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if from != "" && bytes.Equal(k, seek) {
				continue
			}
			val, err := item.ValueCopy(nil)
			if !yield(KV{Key: string(k[base:]), Value: val}, err) || err != nil {
				return
			}
			if n++; limit > 0 && n >= limit {
				return
			}
		}
	}
}
