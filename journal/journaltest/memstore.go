package journaltest

import (
	"context"
	"fmt"
	"hash/fnv"
	"iter"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/troupe-dev/troupe/journal"
)

// MemConfig configures a MemStore. Zero fields take the same defaults as
// the Badger store.
type MemConfig struct {
	// MaxEventSize caps one event's size (type, content type, tags,
	// metadata, payload, plus 32 bytes of framing). Default 1 MiB.
	MaxEventSize int
	// MaxAppendEvents caps the events of one append. Default 10,000.
	MaxAppendEvents int
	// MaxAppendBytes caps one append. Default 4 MiB.
	MaxAppendBytes int
	// MaxSnapshotSize caps a snapshot's data. Default 4 MiB.
	MaxSnapshotSize int
	// DeleteCoveredEvents deletes the events a saved snapshot covers.
	DeleteCoveredEvents bool
	// Partitions divides the log into this many partitions (as a cluster's
	// replicated log is). Default 1, as a single node's.
	Partitions int
	// PartitionOf maps a stream to its partition. Default: FNV-1a of the
	// stream id modulo Partitions.
	PartitionOf func(stream string) int
}

// MemStore is an in-memory journal.Store with the semantics and errors of
// the Badger store: for tests of code that uses a journal, and as the
// reference the conformance suite is checked against. Every method is safe
// for concurrent use; appends are serialised by one mutex (there is no
// durability to batch for).
type MemStore struct {
	cfg MemConfig
	d   *memData
}

// memData is what survives Reopen.
type memData struct {
	mu      sync.Mutex
	streams map[string]*memStream
	logs    [][]memRef // logs[p][i] is position i+1 of partition p
	events  uint64
	idem    map[string]journal.AppendResult
	notify  chan struct{}
	last    time.Time
	// open is the handle that may use the data; older handles are closed.
	open *MemStore
}

type memRef struct {
	stream string
	seq    uint64
}

type memStream struct {
	events     []journal.Event // events[i] has Sequence first+i
	first      uint64          // sequence of events[0]
	lastSeq    uint64
	created    time.Time
	lastTime   time.Time
	tombstoned bool
	snap       *journal.Snapshot
}

var _ journal.Store = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore(cfg MemConfig) *MemStore {
	if cfg.MaxEventSize == 0 {
		cfg.MaxEventSize = 1 << 20
	}
	if cfg.MaxAppendEvents == 0 {
		cfg.MaxAppendEvents = 10_000
	}
	if cfg.MaxAppendBytes == 0 {
		cfg.MaxAppendBytes = max(4<<20, cfg.MaxEventSize)
	}
	if cfg.MaxSnapshotSize == 0 {
		cfg.MaxSnapshotSize = 4 << 20
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 1
	}
	if cfg.PartitionOf == nil {
		n := uint32(cfg.Partitions)
		cfg.PartitionOf = func(stream string) int {
			h := fnv.New32a()
			h.Write([]byte(stream))
			return int(h.Sum32() % n)
		}
	}
	m := &MemStore{cfg: cfg, d: &memData{
		logs:    make([][]memRef, cfg.Partitions),
		streams: make(map[string]*memStream),
		idem:    make(map[string]journal.AppendResult),
		notify:  make(chan struct{}),
	}}
	m.d.open = m
	return m
}

// Reopen closes m and returns a new handle on the same data, as a restart
// of a durable store would.
func (m *MemStore) Reopen() *MemStore {
	m.Close()
	n := &MemStore{cfg: m.cfg, d: m.d}
	m.d.mu.Lock()
	m.d.open = n
	m.d.notify = make(chan struct{})
	m.d.mu.Unlock()
	return n
}

// lock locks the data and reports whether m is still open.
func (m *MemStore) lock() error {
	m.d.mu.Lock()
	if m.d.open != m {
		m.d.mu.Unlock()
		return journal.ErrClosed
	}
	return nil
}

// Close closes the handle; it is idempotent.
func (m *MemStore) Close() error {
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	if m.d.open == m {
		m.d.open = nil
		close(m.d.notify)
	}
	return nil
}

func eventSize(e *journal.Event) int {
	n := 32 + len(e.Type) + len(e.ContentType) + len(e.Payload)
	for _, t := range e.Tags {
		n += len(t) + 2
	}
	for k, v := range e.Metadata {
		n += len(k) + len(v) + 4
	}
	return n
}

func (m *MemStore) validate(req *journal.AppendRequest) error {
	if _, _, err := journal.ParseStream(req.Stream); err != nil {
		return err
	}
	switch n := len(req.Events); {
	case n == 0:
		return fmt.Errorf("%w: append to %q has no events", journal.ErrInvalid, req.Stream)
	case n > m.cfg.MaxAppendEvents:
		return fmt.Errorf("%w: append to %q has %d events, over the limit of %d", journal.ErrInvalid, req.Stream, n, m.cfg.MaxAppendEvents)
	case len(req.IdempotencyKey) > 1024:
		return fmt.Errorf("%w: idempotency key of %d bytes is over 1024", journal.ErrInvalid, len(req.IdempotencyKey))
	case req.IdempotencyKey == "" && len(req.Reply) > 0:
		return fmt.Errorf("%w: a reply needs an idempotency key", journal.ErrInvalid)
	}
	total := len(req.Reply)
	for i := range req.Events {
		e := &req.Events[i]
		switch {
		case e.Type == "":
			return fmt.Errorf("%w: event %d of %q has an empty type", journal.ErrInvalid, i, req.Stream)
		case len(e.Type) > 1024:
			return fmt.Errorf("%w: event %d of %q has a type of %d bytes, over 1024", journal.ErrInvalid, i, req.Stream, len(e.Type))
		}
		for _, t := range e.Tags {
			if t == "" || len(t) > 1024 || strings.IndexByte(t, 0) >= 0 {
				return fmt.Errorf("%w: event %d of %q has an invalid tag %q", journal.ErrInvalid, i, req.Stream, t)
			}
		}
		for k := range e.Metadata {
			if k == "" {
				return fmt.Errorf("%w: event %d of %q has an empty metadata key", journal.ErrInvalid, i, req.Stream)
			}
		}
		size := eventSize(e)
		if size > m.cfg.MaxEventSize {
			return &journal.TooLargeError{Stream: req.Stream, Index: i, Size: size, Limit: m.cfg.MaxEventSize}
		}
		total += size
	}
	if total > m.cfg.MaxAppendBytes {
		return &journal.TooLargeError{Stream: req.Stream, Index: -1, Size: total, Limit: m.cfg.MaxAppendBytes}
	}
	return nil
}

func cloneEvent(e journal.Event) journal.Event {
	e.Payload = slices.Clone(e.Payload)
	if len(e.Payload) == 0 {
		e.Payload = nil
	}
	e.Tags = slices.Clone(e.Tags)
	if len(e.Tags) == 0 {
		e.Tags = nil
	}
	if len(e.Metadata) == 0 {
		e.Metadata = nil
	} else {
		e.Metadata = maps.Clone(e.Metadata)
	}
	return e
}

// now returns a commit time that never goes backwards.
func (d *memData) now() time.Time {
	t := time.Now().Round(0)
	if !t.After(d.last) {
		t = d.last.Add(time.Nanosecond)
	}
	d.last = t
	return t
}

func (d *memData) stream(id string, create bool) *memStream {
	s := d.streams[id]
	if s == nil && create {
		s = &memStream{first: 1}
		d.streams[id] = s
	}
	return s
}

// Append appends atomically; see journal.Store.
func (m *MemStore) Append(ctx context.Context, req journal.AppendRequest) (journal.AppendResult, error) {
	if err := ctx.Err(); err != nil {
		return journal.AppendResult{}, err
	}
	if err := m.validate(&req); err != nil {
		return journal.AppendResult{}, err
	}
	if err := m.lock(); err != nil {
		return journal.AppendResult{}, err
	}
	d := m.d
	defer d.mu.Unlock()
	ikey := req.Stream + "\x00" + req.IdempotencyKey
	if req.IdempotencyKey != "" {
		if r, ok := d.idem[ikey]; ok {
			r.Duplicate = true
			r.Reply = slices.Clone(r.Reply)
			return r, nil
		}
	}
	s := d.stream(req.Stream, false)
	var last uint64
	if s != nil {
		if s.tombstoned {
			return journal.AppendResult{}, fmt.Errorf("append to %q: %w", req.Stream, journal.ErrTombstoned)
		}
		last = s.lastSeq
	}
	if req.Expected != journal.ExpectAny && req.Expected != last {
		return journal.AppendResult{}, &journal.ConflictError{Stream: req.Stream, Expected: req.Expected, Actual: last}
	}
	s = d.stream(req.Stream, true)
	now := d.now()
	if s.created.IsZero() {
		s.created = now
	}
	part := m.PartitionOf(req.Stream)
	res := journal.AppendResult{FirstSequence: last + 1, Partition: part, FirstPosition: uint64(len(d.logs[part])) + 1}
	for _, e := range req.Events {
		e = cloneEvent(e)
		s.lastSeq++
		d.logs[part] = append(d.logs[part], memRef{req.Stream, s.lastSeq})
		e.Stream, e.Sequence, e.Partition, e.Position, e.Time = req.Stream, s.lastSeq, part, uint64(len(d.logs[part])), now
		s.events = append(s.events, e)
	}
	d.events += uint64(len(req.Events))
	s.lastTime = now
	res.LastSequence, res.LastPosition = s.lastSeq, uint64(len(d.logs[part]))
	if req.IdempotencyKey != "" {
		res.Reply = slices.Clone(req.Reply)
		d.idem[ikey] = res
		res.Reply = slices.Clone(req.Reply)
	}
	close(d.notify)
	d.notify = make(chan struct{})
	return res, nil
}

// Read yields a stream's events; see journal.Store.
func (m *MemStore) Read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[journal.Event, error] {
	return func(yield func(journal.Event, error) bool) {
		if _, _, err := journal.ParseStream(stream); err != nil {
			yield(journal.Event{}, err)
			return
		}
		if err := m.lock(); err != nil {
			yield(journal.Event{}, err)
			return
		}
		var evs []journal.Event
		if s := m.d.streams[stream]; s != nil {
			evs = s.events // appends never change what this slice shows
		}
		m.d.mu.Unlock()
		n := 0
		for _, e := range evs {
			if e.Sequence < from {
				continue
			}
			if err := ctx.Err(); err != nil {
				yield(journal.Event{}, err)
				return
			}
			if !yield(cloneEvent(e), nil) {
				return
			}
			if n++; limit > 0 && n >= limit {
				return
			}
		}
	}
}

// Partitions is the number of partitions; see journal.Store.
func (m *MemStore) Partitions() int { return m.cfg.Partitions }

// PartitionOf is a stream's partition; see journal.Store.
func (m *MemStore) PartitionOf(stream string) int { return m.cfg.PartitionOf(stream) }

func (m *MemStore) checkPartition(p int) error {
	if p < 0 || p >= m.cfg.Partitions {
		return fmt.Errorf("%w: %d (the log has %d)", journal.ErrNoPartition, p, m.cfg.Partitions)
	}
	return nil
}

// ReadAll yields a partition of the log; see journal.Store.
func (m *MemStore) ReadAll(ctx context.Context, partition int, from uint64, f journal.Filter, limit int) iter.Seq2[journal.Event, error] {
	return func(yield func(journal.Event, error) bool) {
		if err := m.checkPartition(partition); err != nil {
			yield(journal.Event{}, err)
			return
		}
		if f.Kind != "" && f.Tag != "" {
			yield(journal.Event{}, fmt.Errorf("%w: filter sets both Kind and Tag", journal.ErrInvalid))
			return
		}
		if strings.ContainsAny(f.Kind, "/\x00") || strings.IndexByte(f.Tag, 0) >= 0 {
			yield(journal.Event{}, fmt.Errorf("%w: bad filter %+v", journal.ErrInvalid, f))
			return
		}
		if err := m.lock(); err != nil {
			yield(journal.Event{}, err)
			return
		}
		from = max(from, 1)
		var evs []journal.Event
		log := m.d.logs[partition]
		for p := from; p <= uint64(len(log)); p++ {
			ref := log[p-1]
			if f.Kind != "" && !strings.HasPrefix(ref.stream, f.Kind+"/") {
				continue
			}
			s := m.d.streams[ref.stream]
			if ref.seq < s.first {
				continue // deleted
			}
			e := s.events[ref.seq-s.first]
			if f.Tag != "" && !slices.Contains(e.Tags, f.Tag) {
				continue
			}
			evs = append(evs, e)
			if limit > 0 && len(evs) >= limit {
				break
			}
		}
		m.d.mu.Unlock()
		for _, e := range evs {
			if err := ctx.Err(); err != nil {
				yield(journal.Event{}, err)
				return
			}
			if !yield(cloneEvent(e), nil) {
				return
			}
		}
	}
}

// LastPosition is the position of a partition's last event (0 for a
// partition the log does not have).
func (m *MemStore) LastPosition(partition int) uint64 {
	if m.checkPartition(partition) != nil {
		return 0
	}
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	return uint64(len(m.d.logs[partition]))
}

// WaitPosition blocks until a partition's last position exceeds after; see
// journal.Store.
func (m *MemStore) WaitPosition(ctx context.Context, partition int, after uint64) (uint64, error) {
	if err := m.checkPartition(partition); err != nil {
		return 0, err
	}
	for {
		if err := m.lock(); err != nil {
			return m.LastPosition(partition), err
		}
		last, ch := uint64(len(m.d.logs[partition])), m.d.notify
		m.d.mu.Unlock()
		if last > after {
			return last, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
}

// Info describes a stream; see journal.Store.
func (m *MemStore) Info(ctx context.Context, stream string) (journal.StreamInfo, error) {
	info := journal.StreamInfo{Stream: stream}
	if _, _, err := journal.ParseStream(stream); err != nil {
		return info, err
	}
	if err := ctx.Err(); err != nil {
		return info, err
	}
	if err := m.lock(); err != nil {
		return info, err
	}
	defer m.d.mu.Unlock()
	s := m.d.streams[stream]
	if s == nil {
		return info, nil
	}
	info.LastSequence, info.Count, info.Tombstoned = s.lastSeq, uint64(len(s.events)), s.tombstoned
	info.First, info.Last = s.created, s.lastTime
	return info, nil
}

// Streams yields stream ids by kind; see journal.Store.
func (m *MemStore) Streams(ctx context.Context, kind string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if strings.ContainsAny(kind, "/\x00") {
			yield("", fmt.Errorf("%w: kind %q holds '/' or NUL", journal.ErrInvalid, kind))
			return
		}
		if err := m.lock(); err != nil {
			yield("", err)
			return
		}
		var ids []string
		for id := range m.d.streams {
			if kind == "" || strings.HasPrefix(id, kind+"/") {
				ids = append(ids, id)
			}
		}
		m.d.mu.Unlock()
		slices.Sort(ids)
		for _, id := range ids {
			if err := ctx.Err(); err != nil {
				yield("", err)
				return
			}
			if !yield(id, nil) {
				return
			}
		}
	}
}

// SaveSnapshot stores a snapshot; see journal.Store and the Badger store.
func (m *MemStore) SaveSnapshot(ctx context.Context, snap journal.Snapshot) error {
	if _, _, err := journal.ParseStream(snap.Stream); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if snap.Sequence == 0 {
		return fmt.Errorf("%w: snapshot of %q at sequence 0", journal.ErrInvalid, snap.Stream)
	}
	if len(snap.Data) > m.cfg.MaxSnapshotSize {
		return &journal.TooLargeError{Stream: snap.Stream, Index: -1, Size: len(snap.Data), Limit: m.cfg.MaxSnapshotSize}
	}
	if err := m.lock(); err != nil {
		return err
	}
	defer m.d.mu.Unlock()
	s := m.d.stream(snap.Stream, false)
	var last uint64
	if s != nil {
		if s.tombstoned {
			return fmt.Errorf("snapshot of %q: %w", snap.Stream, journal.ErrTombstoned)
		}
		last = s.lastSeq
	}
	if snap.Sequence > last {
		return fmt.Errorf("%w: snapshot of %q at sequence %d, beyond its last sequence %d", journal.ErrInvalid, snap.Stream, snap.Sequence, last)
	}
	if s.snap != nil && s.snap.Sequence > snap.Sequence {
		return nil
	}
	snap.Data = slices.Clone(snap.Data)
	snap.Time = m.d.now()
	s.snap = &snap
	if m.cfg.DeleteCoveredEvents && snap.Sequence >= s.first {
		n := snap.Sequence - s.first + 1
		s.events = slices.Clone(s.events[n:])
		s.first = snap.Sequence + 1
		m.d.events -= n
	}
	return nil
}

// LoadSnapshot returns the latest snapshot; see journal.Store.
func (m *MemStore) LoadSnapshot(ctx context.Context, stream string) (journal.Snapshot, error) {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return journal.Snapshot{}, err
	}
	if err := ctx.Err(); err != nil {
		return journal.Snapshot{}, err
	}
	if err := m.lock(); err != nil {
		return journal.Snapshot{}, err
	}
	defer m.d.mu.Unlock()
	s := m.d.streams[stream]
	if s == nil || s.snap == nil {
		return journal.Snapshot{}, fmt.Errorf("snapshot of %q: %w", stream, journal.ErrNotFound)
	}
	snap := *s.snap
	snap.Data = slices.Clone(snap.Data)
	return snap, nil
}

// Tombstone closes a stream; see journal.Store.
func (m *MemStore) Tombstone(ctx context.Context, stream string) error {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.lock(); err != nil {
		return err
	}
	defer m.d.mu.Unlock()
	m.d.stream(stream, true).tombstoned = true
	return nil
}

// Stats summarises the store.
func (m *MemStore) Stats(ctx context.Context) (journal.Stats, error) {
	if err := ctx.Err(); err != nil {
		return journal.Stats{}, err
	}
	if err := m.lock(); err != nil {
		return journal.Stats{}, err
	}
	defer m.d.mu.Unlock()
	heads := make([]uint64, len(m.d.logs))
	for p, l := range m.d.logs {
		heads[p] = uint64(len(l))
	}
	return journal.Stats{Streams: uint64(len(m.d.streams)), Events: m.d.events, Heads: heads}, nil
}
