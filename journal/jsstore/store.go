package jsstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsbatch"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsread"
)

// Config configures a Store. Conn is required; every other field has a
// default.
type Config struct {
	// Conn is the connection to the NATS cluster (the node's in-process
	// connection). The caller owns it.
	Conn *nats.Conn
	// Prefix names the streams (PREFIX_P<n>) and starts their subjects.
	// Default "troupe".
	Prefix string
	// Partitions is the number of partitions (streams); fixed for the life
	// of the data: the first Store to open the journal records it (KV
	// bucket PREFIX-meta, key layout), and a Store configured otherwise
	// fails to open with *LayoutError. Default 16 (ADR 0011).
	Partitions int
	// PartitionOf maps a stream id to its partition. Default: FNV-1a of
	// the stream id modulo Partitions. A cluster maps by shard.
	PartitionOf func(stream string) int
	// Replicas is each stream's replica count. Default 1; a cluster uses
	// min(3, nodes with JetStream).
	Replicas int
	// Timeout bounds each request to JetStream. Default 5 s.
	Timeout time.Duration
	// MaxEventSize caps one event (type, content type, tags, metadata and
	// payload). Default 1 MiB, at most the connection's max payload less
	// room for headers.
	MaxEventSize int
	// MaxAppendEvents caps the events of one append: one append is one
	// atomic batch, with room for its idempotency record. Default and
	// maximum 999.
	MaxAppendEvents int
	// MaxSnapshotSize caps a snapshot's data. Default 1 MiB.
	MaxSnapshotSize int
	// ReadBatch is the most messages Read and ReadAll ask one direct get
	// for (a replica answers; see scan). Default 512; at most 10,000. One
	// batch is also cut at 4 MiB.
	ReadBatch int
	// RequireOwnership makes writes (Append, SaveSnapshot, Tombstone) to a
	// partition this Store has not acquired (Acquire) fail at once with
	// *journal.NotOwnerError. A cluster sets it: a partition's owner, the
	// holder of its lease, is its only writer. Default false: every
	// partition is written by this Store, fenced by the stream's last
	// sequence (a single writer, or tests).
	RequireOwnership bool
	// KeepEventTimes makes Append keep an event's Time when the caller
	// set it (header Troupe-Time), instead of the log's commit timestamp,
	// which the server does not return in its ack. Every reader, on every
	// node, sees that time. The node's local copy
	// (journal/jsstore/ownedcopy) needs it: it stamps each event just
	// before the append, so that its copy and the log agree exactly.
	// Default false: the log's timestamps.
	KeepEventTimes bool
	// OnFenced, if set, is called once, on its own goroutine, when this
	// Store loses a partition it had acquired because another writer (a
	// newer owner's takeover marker) moved the stream's fence. Close waits
	// for it to return, so it must not call Close.
	OnFenced func(partition int)
	// LeadLocallyAfter, if positive, makes an owner move the leadership of
	// its partition's stream to the server Conn is connected to (a leader
	// stepdown that prefers it) once it has owned the partition this long,
	// when that server holds a current replica: the owner's appends, head
	// and idempotency reads then go to a leader in its own process instead
	// of across a route. Not at once: right after a crash the stream may
	// still be electing, and its info may name the dead leader. Best
	// effort and bounded (the partition's writes wait at most a second
	// for the move). Default 0: off.
	LeadLocallyAfter time.Duration
	// TailCacheBytes bounds the memory of the partitions' tail caches
	// together (the latest events of each partition, which every
	// projection of the node reads; tail.go): each partition's cache keeps
	// its share, and at most 4,096 events (a quarter more between trims).
	// Default 64 MiB; with the default shard count (96) and events of a
	// few hundred bytes a partition keeps about 2,000 events.
	TailCacheBytes int64
	// Logger receives the store's logs. Default: discarded.
	Logger *slog.Logger
}

const maxAppendEvents = jsbatch.MaxMessages - 1

// defaultTailCacheBytes is Config.TailCacheBytes's default.
const defaultTailCacheBytes = 64 << 20

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "troupe"
	}
	if c.Partitions == 0 {
		c.Partitions = 16
	}
	if c.PartitionOf == nil {
		n := uint32(c.Partitions)
		c.PartitionOf = func(stream string) int {
			h := fnv.New32a()
			h.Write([]byte(stream))
			return int(h.Sum32() % n)
		}
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.TailCacheBytes == 0 {
		c.TailCacheBytes = defaultTailCacheBytes
	}
	if c.MaxEventSize == 0 {
		c.MaxEventSize = 1 << 20
	}
	if c.MaxAppendEvents == 0 {
		c.MaxAppendEvents = maxAppendEvents
	}
	if c.MaxSnapshotSize == 0 {
		c.MaxSnapshotSize = 1 << 20
	}
	if c.ReadBatch == 0 {
		c.ReadBatch = 512
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every invalid field of a defaulted Config.
func (c Config) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("Conn is required"))
	}
	if !validPrefix(c.Prefix) {
		errs = append(errs, fmt.Errorf("Prefix %q: want letters, digits, '_' and '-' (it names streams, subjects and a KV bucket)", c.Prefix))
	}
	if c.Partitions < 1 || c.Partitions > 4096 {
		errs = append(errs, fmt.Errorf("Partitions %d: want 1 to 4096", c.Partitions))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("Replicas %d: want 1 to 5", c.Replicas))
	}
	if c.MaxAppendEvents < 1 || c.MaxAppendEvents > maxAppendEvents {
		errs = append(errs, fmt.Errorf("MaxAppendEvents %d: want 1 to %d (one append is one atomic batch)", c.MaxAppendEvents, maxAppendEvents))
	}
	if c.ReadBatch < 1 || c.ReadBatch > 10000 {
		errs = append(errs, fmt.Errorf("ReadBatch %d: want 1 to 10000", c.ReadBatch))
	}
	if c.Timeout < 0 || c.MaxEventSize < 0 || c.MaxSnapshotSize < 0 {
		errs = append(errs, errors.New("negative limit"))
	}
	if c.TailCacheBytes < 0 {
		errs = append(errs, fmt.Errorf("TailCacheBytes %d: want 0 (the default, 64 MiB) or more", c.TailCacheBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("jsstore: %w", err)
	}
	return nil
}

func validPrefix(p string) bool {
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return p != "" && len(p) <= 64
}

// Headers of the store's messages.
const (
	hdrSeq         = "Troupe-Seq"          // an event's sequence in its entity's stream
	hdrType        = "Troupe-Type"         // the event type
	hdrContentType = "Troupe-Content-Type" // the payload's encoding ("" = JSON)
	hdrTag         = "Troupe-Tag"          // one value per tag
	hdrMeta        = "Troupe-Meta"         // metadata as a JSON object
	hdrTime        = "Troupe-Time"         // the writer's time, unix ns (Config.KeepEventTimes)
)

// Store is a journal.Store on JetStream: each partition is one stream,
// written by this Store alone (the partition's owner), every append one
// atomic batch fenced by the stream's expected last sequence (ADR 0011).
// Positions are stream sequences: they increase strictly but skip the
// store's own records (idempotency, snapshots, tombstones).
//
// Appends are group-committed per partition (commit.go). Read and ReadAll
// take batches of events with direct gets, which any replica may answer,
// checked against a position known to be committed (scan); every other
// read (fences, heads, idempotency records, snapshots) asks the stream's
// leader.
type Store struct {
	cfg   Config
	js    jetstream.JetStream
	pub   *jsbatch.Publisher
	rd    *jsread.Reader
	parts []*part
	log   *slog.Logger

	// Reads, for tests and benchmarks (export_test.go): direct batches
	// asked for, single messages asked of a leader; leaderReads makes
	// Read and ReadAll read one message at a time from the leader (as
	// before batched reads); directHook sees every direct batch first.
	directGets  atomic.Uint64
	leaderGets  atomic.Uint64
	leaderReads atomic.Bool
	directHook  func(stream string, from uint64, b *jsread.Batch)
	// publishHook, for tests, may change what a batch's publish or the
	// resolving of its outcome answered (op "publish", "resolve"), as a
	// lost answer would.
	publishHook func(op string, ack jsbatch.Ack, err error) (jsbatch.Ack, error)

	closed  atomic.Bool
	closing chan struct{}
	gather  atomic.Int64 // the most a busy partition's committer gathers, ns (gatherFor; 0: never)
	// life is cancelled by Close: it ends the Store's own background
	// requests (rewatch) at once instead of at their timeout.
	life       context.Context
	cancelLife context.CancelFunc
	wg         sync.WaitGroup // committers and OnFenced calls
	nonce      string         // unique to this Store: its batches' ids
}

// part is one partition: its stream and what its owner knows of it.
type part struct {
	n      int
	name   string
	stream jetstream.Stream

	mu         sync.Mutex // serialises writes: the fence admits one at a time
	last       uint64     // the stream's last sequence (the fence)
	own        ownership
	held       atomic.Pointer[Fence] // own.fence while own.owned, for Holds
	mayWrite   atomic.Bool           // own.owned, for a check without mu
	unresolved *unresolved           // a batch of unknown outcome, settled before the next write
	batches    uint64                // batches published, for their ids

	// What the writer knows of the partition's entities, valid for one
	// generation (gen): resetCache drops it and starts the next. Held
	// under mu (by the writer) and hmu (for Append's prefetch); lock
	// order mu, then hmu.
	hmu   sync.Mutex
	gen   atomic.Uint64
	heads map[string]head
	idem  map[idemKey]journal.AppendResult // keys this writer recorded
	// Keys Idempotent found unrecorded in this generation, for the
	// append that usually follows (an entity looks its command's key up
	// before the handler runs): its prefetch takes the entry instead of
	// reading the log again. Sound for the same reason as the prefetch:
	// only this writer can record a key in the generation (another
	// writer's batch moves the fence, and ours then fails), and it
	// records its own in idem before the next batch is built.
	absent map[idemKey]struct{}

	qmu       sync.Mutex
	queue     []*pending    // appends waiting for the committer
	qclosed   bool          // the committer has stopped: no more appends
	qwake     chan struct{} // capacity 1: the queue reached qwant
	qwant     int           // under qmu: the queue length the committer waits for (0: not waiting)
	lastEvent atomic.Uint64

	nmu    sync.Mutex
	notify chan struct{} // closed and replaced when lastEvent advances

	watcher jetstream.ConsumeContext // see watch; nil when not watching
	wname   string                   // the watcher's consumer

	tail tail // the latest events as read, for ReadAll (tail.go)
	// ownBatch is this Store's last batch that landed: the position of
	// its last event and of its last message (0, 0: none yet). Under mu.
	ownBatch struct{ event, end uint64 }
}

// head is what the owner knows of an entity's stream.
type head struct {
	seq        uint64 // last event sequence (0: none)
	tombstoned bool
}

var _ journal.Store = (*Store)(nil)

// Open creates (or binds to) the partition streams and returns the store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	pub, err := jsbatch.New(cfg.Conn, jsbatch.Config{
		Timeout: cfg.Timeout,
		// One round trip per batch instead of two: the committer waits
		// for each batch, so this is throughput (measured: +20-80 % with
		// P=16, docs/benchmarks.md). A refusal before the commit then
		// comes as an incomplete batch, which publishAt retries.
		SkipFirstAck: true,
	})
	if err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	rd, err := jsread.New(cfg.Conn, jsread.Config{})
	if err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	s := &Store{cfg: cfg, js: js, pub: pub, rd: rd, log: cfg.Logger, closing: make(chan struct{}), nonce: nuid.Next()}
	s.gather.Store(int64(maxGather))
	s.life, s.cancelLife = context.WithCancel(context.Background())
	if err := s.checkLayout(ctx); err != nil {
		rd.Close()
		return nil, err
	}
	for n := range cfg.Partitions {
		p, err := s.openPart(ctx, n)
		if err != nil {
			rd.Close()
			return nil, err
		}
		s.parts = append(s.parts, p)
	}
	for _, p := range s.parts {
		s.wg.Add(1)
		go s.commitLoop(p)
	}
	for _, p := range s.parts {
		if err := s.watch(ctx, p, p.last+1); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) openPart(ctx context.Context, n int) (*part, error) {
	name := fmt.Sprintf("%s_P%d", strings.ToUpper(s.cfg.Prefix), n)
	ctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	defer cancel()
	st, err := s.ensureStream(ctx, jetstream.StreamConfig{
		Name:               name,
		Subjects:           []string{s.subject(n, ">")},
		Storage:            jetstream.FileStorage,
		Replicas:           s.cfg.Replicas,
		AllowAtomicPublish: true,
		// Read and ReadAll take batches from any replica (scan); set on
		// streams created without it too (ensureStream updates them).
		AllowDirect: true,
		DenyDelete:  true,
		Duplicates:  2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("jsstore: stream %s: %w", name, err)
	}
	p := &part{n: n, name: name, stream: st, heads: map[string]head{}, idem: map[idemKey]journal.AppendResult{},
		absent: map[idemKey]struct{}{},
		notify: make(chan struct{}), qwake: make(chan struct{}, 1)}
	p.tail.maxBytes = int(s.cfg.TailCacheBytes / int64(s.cfg.Partitions))
	p.mayWrite.Store(!s.cfg.RequireOwnership)
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("jsstore: stream %s: %w", name, err)
	}
	p.last = info.State.LastSeq
	// The last event (the last message on an event subject; the server
	// finds the last match of a wildcard).
	m, err := s.lastMsg(ctx, p, s.subject(n, "e.>"))
	if err != nil {
		return nil, err
	}
	if m != nil {
		p.lastEvent.Store(m.Sequence)
	}
	return p, nil
}

// ensureStream binds to a stream, creating it if it does not exist and
// updating it if its settings differ from want's. Every node opens the
// same streams, often at once: concurrent creates and updates of one
// stream on a clustered server are not all answered (some wait forever),
// so each request is short, a lost race re-reads, and nothing is updated
// that need not be. Bounded by ctx.
func (s *Store) ensureStream(ctx context.Context, want jetstream.StreamConfig) (jetstream.Stream, error) {
	var lastErr error
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		st, err := s.ensureStreamOnce(ctx, want)
		if err == nil {
			return st, nil
		}
		lastErr = err
		if err := pause(ctx, wait); err != nil {
			return nil, errors.Join(err, lastErr)
		}
	}
}

func (s *Store) ensureStreamOnce(ctx context.Context, want jetstream.StreamConfig) (jetstream.Stream, error) {
	rctx, cancel := context.WithTimeout(ctx, min(s.cfg.Timeout, 2*time.Second))
	defer cancel()
	st, err := s.js.Stream(rctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return s.js.CreateStream(rctx, want)
	}
	if err != nil {
		return nil, err
	}
	have := st.CachedInfo().Config
	if slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage && have.Replicas == want.Replicas &&
		have.AllowAtomicPublish == want.AllowAtomicPublish && have.DenyDelete == want.DenyDelete &&
		have.Duplicates == want.Duplicates && have.AllowDirect == want.AllowDirect &&
		unlimited(have.MaxMsgsPerSubject) == unlimited(want.MaxMsgsPerSubject) && have.Discard == want.Discard {
		return st, nil
	}
	s.log.Info("updating the stream's settings", "stream", want.Name)
	return s.js.UpdateStream(rctx, want)
}

// subject is PREFIX.p<n>.<rest>.
func (s *Store) subject(n int, rest string) string {
	return s.cfg.Prefix + ".p" + strconv.Itoa(n) + "." + rest
}

var b64 = base64.RawURLEncoding

// entitySubject is the subject of a stream's records of one type ("e"
// events, "t" tombstone, "s" snapshot): kind and id base64url-encoded, so
// that any id makes one subject token.
// It is built in one buffer: it is made for every event appended.
func (s *Store) entitySubject(n int, typ, stream string) string {
	kind, id, _ := strings.Cut(stream, "/")
	b := make([]byte, 0, len(s.cfg.Prefix)+16+len(typ)+b64.EncodedLen(len(kind))+b64.EncodedLen(len(id)))
	b = append(append(b, s.cfg.Prefix...), ".p"...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(append(append(b, '.'), typ...), '.')
	b = b64.AppendEncode(b, []byte(kind))
	b = b64.AppendEncode(append(b, '.'), []byte(id))
	return string(b)
}

func (s *Store) idemSubject(n int, stream, key string) string {
	h := sha256.Sum256([]byte(stream + "\x00" + key))
	return s.subject(n, "i."+hex.EncodeToString(h[:16]))
}

func (s *Store) isEvent(n int, subject string) bool {
	return strings.HasPrefix(subject, s.subject(n, "e."))
}

// streamOfSubject decodes an event subject back into its stream id.
func (s *Store) streamOfSubject(n int, subject string) (string, error) {
	return streamOfSubject(s.subject(n, "e."), subject)
}

func streamOfSubject(evPrefix, subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, evPrefix)
	k, i, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return "", fmt.Errorf("subject %q is not an event subject", subject)
	}
	kind, err1 := b64.DecodeString(k)
	id, err2 := b64.DecodeString(i)
	if err := errors.Join(err1, err2); err != nil {
		return "", fmt.Errorf("subject %q: %w", subject, err)
	}
	stream := journal.StreamID(string(kind), string(id))
	if pk, _, err := journal.ParseStream(stream); err != nil || pk != string(kind) {
		return "", fmt.Errorf("subject %q does not name a valid stream", subject)
	}
	return stream, nil
}

// KeepsEventTimes reports Config.KeepEventTimes.
func (s *Store) KeepsEventTimes() bool { return s.cfg.KeepEventTimes }

// Identity names the JetStream stream of a partition and the time it was
// created ("" for an unknown partition). A copy of its messages kept
// elsewhere (the node's local copy, journal/jsstore/ownedcopy) belongs to
// it only while the identity stays the same: a stream deleted and created
// again starts over at sequence 1 with other messages.
func (s *Store) Identity(partition int) string {
	p, err := s.partition(partition)
	if err != nil {
		return ""
	}
	return p.name + "@" + p.stream.CachedInfo().Created.UTC().Format(time.RFC3339Nano)
}

// Partitions is the number of partitions; see journal.Store.
func (s *Store) Partitions() int { return s.cfg.Partitions }

// PartitionOf is a stream's partition; see journal.Store.
func (s *Store) PartitionOf(stream string) int { return s.cfg.PartitionOf(stream) }

func (s *Store) part(stream string) *part { return s.parts[s.cfg.PartitionOf(stream)] }

func (s *Store) partition(n int) (*part, error) {
	if n < 0 || n >= len(s.parts) {
		return nil, fmt.Errorf("%w: %d (the log has %d)", journal.ErrNoPartition, n, len(s.parts))
	}
	return s.parts[n], nil
}

// ctx bounds one request by the store's Timeout.
func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.Timeout)
}

// Close releases the store; it is idempotent. The connection stays open.
func (s *Store) Close() error {
	if s.closed.CompareAndSwap(false, true) {
		close(s.closing)
		s.cancelLife()
		s.unwatch()
	}
	s.wg.Wait()
	return s.rd.Close()
}

func (s *Store) check() error {
	if s.closed.Load() {
		return journal.ErrClosed
	}
	return nil
}

// corrupt reports a stored message that does not decode.
func corrupt(stream string, seq, pos uint64, err error) error {
	return &journal.CorruptError{Stream: stream, Sequence: seq, Position: pos, Err: err}
}

// decodeEvent turns a stored event message of partition n into an event.
func (s *Store) decodeEvent(n int, m *jetstream.RawStreamMsg) (journal.Event, error) {
	return decodeEvent(s.subject(n, "e."), s.parts[n].name, n, m)
}

// decodeEvent decodes a stored event message (subject, headers, data) of
// the JetStream stream jsName, partition n, whose event subjects start
// with evPrefix. Bytes that do not decode (another writer's, a damaged
// replica's) give a *journal.CorruptError naming the stream and the
// message's sequence, never a panic (FuzzDecodeEvent).
func decodeEvent(evPrefix, jsName string, n int, m *jetstream.RawStreamMsg) (journal.Event, error) {
	bad := func(stream string, seq uint64, err error) error {
		return corrupt(stream, seq, m.Sequence, fmt.Errorf("JetStream stream %s sequence %d: %w", jsName, m.Sequence, err))
	}
	stream, err := streamOfSubject(evPrefix, m.Subject)
	if err != nil {
		return journal.Event{}, bad(jsName, 0, err)
	}
	seq, err := strconv.ParseUint(m.Header.Get(hdrSeq), 10, 64)
	if err != nil || seq == 0 {
		return journal.Event{}, bad(stream, 0, fmt.Errorf("header %s %q", hdrSeq, m.Header.Get(hdrSeq)))
	}
	ev := journal.Event{
		Stream: stream, Sequence: seq, Partition: n, Position: m.Sequence, Time: m.Time,
		Type: m.Header.Get(hdrType), ContentType: m.Header.Get(hdrContentType),
		Payload: m.Data, Tags: m.Header.Values(hdrTag),
	}
	if ev.Type == "" {
		return journal.Event{}, bad(stream, seq, errors.New("no event type"))
	}
	if meta := m.Header.Get(hdrMeta); meta != "" {
		if err := json.Unmarshal([]byte(meta), &ev.Metadata); err != nil {
			return journal.Event{}, bad(stream, seq, fmt.Errorf("metadata: %w", err))
		}
	}
	if t := m.Header.Get(hdrTime); t != "" {
		ns, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			return journal.Event{}, bad(stream, seq, fmt.Errorf("header %s %q", hdrTime, t))
		}
		ev.Time = time.Unix(0, ns).UTC()
	}
	return ev, nil
}

// Read yields a stream's events from sequence from; see journal.Store.
//
// It asks the stream's leader for the entity's last event first: that
// event's position is the read's bound (scan), so the read sees every
// event the leader held when it started, whichever replica answers the
// batches; an entity without events costs that one request.
func (s *Store) Read(ctx context.Context, stream string, from uint64, limit int) iter.Seq2[journal.Event, error] {
	return s.ReadFrom(ctx, stream, from, 1, limit)
}

// ReadFrom is Read with a hint for a caller that knows where the events
// it asks for start in the partition's stream: every event of the stream
// with Sequence >= from is at Position >= pos (for instance pos is one
// past the position of the event at from-1, which the caller holds). The
// scan then starts at pos instead of at the stream's first message, so
// reading the last few events of a long stream costs a batch, not a walk
// over its history. A wrong hint (pos past an event it should yield)
// loses events; pos <= 1 is Read.
func (s *Store) ReadFrom(ctx context.Context, stream string, from, pos uint64, limit int) iter.Seq2[journal.Event, error] {
	return func(yield func(journal.Event, error) bool) {
		if _, _, err := journal.ParseStream(stream); err != nil {
			yield(journal.Event{}, err)
			return
		}
		if err := s.check(); err != nil {
			yield(journal.Event{}, err)
			return
		}
		n := s.PartitionOf(stream)
		subject := s.entitySubject(n, "e", stream)
		last, err := s.lastMsg(ctx, s.parts[n], subject)
		if err != nil {
			yield(journal.Event{}, err)
			return
		}
		if last == nil {
			return
		}
		head, err := s.decodeEvent(n, last)
		if err != nil {
			yield(journal.Event{}, err)
			return
		}
		if head.Sequence < from {
			return
		}
		s.scan(ctx, n, max(pos, 1), subject, bound{pos: last.Sequence, exact: true, dense: from <= 1}, func(ev journal.Event, err error) (bool, bool) {
			if err != nil {
				return yield(journal.Event{}, err), false
			}
			if ev.Sequence < from {
				return true, false
			}
			return yield(ev, nil), true
		}, limit)
	}
}

// ReadAll yields a partition's events; see journal.Store. It sees at
// least every event up to the partition's LastPosition when it starts
// (the bound of scan): to see another node's append, wait for its
// position first (WaitPosition), as a query with a consistency token
// does. Events appended since may or may not be yielded.
func (s *Store) ReadAll(ctx context.Context, partition int, from uint64, f journal.Filter, limit int) iter.Seq2[journal.Event, error] {
	return func(yield func(journal.Event, error) bool) {
		p, err := s.partition(partition)
		if err != nil {
			yield(journal.Event{}, err)
			return
		}
		subject := s.subject(partition, "e.>")
		switch {
		case f.Kind != "" && f.Tag != "":
			yield(journal.Event{}, fmt.Errorf("%w: filter sets both Kind and Tag", journal.ErrInvalid))
			return
		case strings.ContainsAny(f.Kind, "/\x00") || strings.IndexByte(f.Tag, 0) >= 0:
			yield(journal.Event{}, fmt.Errorf("%w: bad filter %+v", journal.ErrInvalid, f))
			return
		case f.Kind != "":
			subject = s.subject(partition, "e."+b64.EncodeToString([]byte(f.Kind))+".*")
		}
		if err := s.check(); err != nil { // the cache would answer
			yield(journal.Event{}, err)
			return
		}
		// Recent positions: from the tail cache, which reads each event
		// from JetStream once for all of this node's projections.
		head := p.lastEvent.Load()
		from = max(from, 1)
		next, sent, done := s.readTail(ctx, partition, from, head, f, limit, yield)
		if done {
			return
		}
		from = next // the rest from the stream
		if limit > 0 {
			limit -= sent
		}
		// The last event matches "e.>", not necessarily a kind's filter.
		b := bound{pos: head, exact: f.Kind == "", dense: f.Tag == ""}
		s.scan(ctx, partition, from, subject, b, func(ev journal.Event, err error) (bool, bool) {
			if err != nil {
				return yield(journal.Event{}, err), false
			}
			if f.Tag != "" && !contains(ev.Tags, f.Tag) {
				return true, false
			}
			return yield(ev, nil), true
		}, limit)
	}
}

// bound is what a read must see: every message on its subject up to
// stream sequence pos, which the reader knows to be committed (the
// leader's last event of the entity; the partition's last position).
type bound struct {
	pos uint64
	// exact: the message at pos is on the read's subject, so a replica
	// that has nothing from a sequence at or below pos lags.
	exact bool
	// dense: the reader counts every message towards its limit, so a
	// batch need not ask for more than the limit's rest.
	dense bool
}

// Direct batches that come back short of an exact bound are asked again
// after a pause (1, 2, 4 ms); then up to leaderRun messages are read from
// the leader, one at a time, before a batch is asked for again.
const (
	maxBehind = 3
	leaderRun = 64
)

// scan walks the events of partition n on subject from stream sequence
// from, until the end, the limit (of events counted by f) or f says stop.
//
// It reads batches with direct gets (ADR 0011, "Reads"): a replica's
// answer is a prefix of the committed log from `from`, so every message
// it returns is right and in order, and the only way it can be wrong is
// by stopping early, when it lags. The read must see everything up to
// b.pos. While batches come back full (the replica holds more), they go
// on. When the replica has nothing more at a sequence past b.pos, the
// read is done. When it has nothing more at or below b.pos:
//   - exact bound: the message at b.pos matches, so the replica lags; the
//     batch is asked again (maxBehind times, with pauses), then messages
//     are read one at a time from the stream's leader (leaderRun of them,
//     or up to the bound), then a batch again;
//   - otherwise a match in between is not known to exist: the leader is
//     asked for the next match, which ends the read (none) or is yielded
//     and the batches go on after it (a match at or below the bound means
//     the replica lags: after maxBehind of them, as above).
//
// A direct get that fails (no responders: the stream has just been
// created or updated, or its replicas are catching up; a timeout; a bad
// reply) also falls back to the leader.
func (s *Store) scan(ctx context.Context, n int, from uint64, subject string, b bound, f func(journal.Event, error) (more, counted bool), limit int) {
	if err := s.check(); err != nil {
		f(journal.Event{}, err)
		return
	}
	p := s.parts[n]
	count := 0
	// emit hands one message to f and says whether to go on.
	emit := func(m *jetstream.RawStreamMsg) bool {
		ev, err := s.decodeEvent(n, m)
		more, counted := f(ev, err)
		if !more || err != nil {
			return false
		}
		if counted {
			if count++; limit > 0 && count >= limit {
				return false
			}
		}
		return true
	}
	// next emits the leader's next message from seq, if any, and says
	// whether to go on and from where.
	next := func(seq uint64) (uint64, bool) {
		m, err := s.leaderGet(ctx, p, jsread.Query{Seq: seq, NextBySubject: subject})
		if errors.Is(err, jsread.ErrNotFound) {
			return seq, false
		}
		if err != nil {
			f(journal.Event{}, fmt.Errorf("jsstore: read %s from %d: %w", p.name, seq, err))
			return seq, false
		}
		return m.Sequence + 1, emit(m)
	}
	leader := s.leaderReads.Load()
	behind, run := 0, 0
	for seq := from; ; {
		if err := ctx.Err(); err != nil {
			f(journal.Event{}, err)
			return
		}
		if leader {
			var more bool
			if seq, more = next(seq); !more {
				return
			}
			if run++; (seq > b.pos || run >= leaderRun) && !s.leaderReads.Load() {
				// Past the bound any replica will do; before it, the
				// replica may have caught up: one short batch more
				// sends the read back here.
				leader, run = false, 0
			}
			continue
		}
		size := s.cfg.ReadBatch
		if b.dense && limit > 0 {
			size = min(size, limit-count)
		}
		bt, err := s.direct(ctx, p, seq, subject, size)
		if err != nil {
			if ctx.Err() != nil {
				f(journal.Event{}, ctx.Err())
				return
			}
			s.log.Debug("direct get failed; reading from the stream's leader", "stream", p.name, "err", err)
			leader = true
			continue
		}
		for _, m := range bt.Msgs {
			if !emit(m) {
				return
			}
			seq = m.Sequence + 1
		}
		switch {
		case len(bt.Msgs) > 0 && bt.Pending > 0:
			behind = 0 // the replica holds more
		case seq > b.pos:
			return // the replica holds nothing more, and the bound is passed
		case !b.exact:
			// The leader's next match: none ends the read; one at or
			// below the bound means the replica lags.
			var more bool
			if seq, more = next(seq); !more {
				return
			}
			if seq <= b.pos+1 {
				if behind++; behind > maxBehind {
					leader = true
				}
			}
		case behind >= maxBehind:
			// Stays at maxBehind until a batch comes back full.
			s.log.Debug("replica behind the read's bound; reading from the stream's leader", "stream", p.name, "from", seq, "bound", b.pos)
			leader = true
		default:
			t := time.NewTimer(time.Millisecond << behind)
			behind++
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				f(journal.Event{}, ctx.Err())
				return
			case <-s.closing:
				t.Stop()
				f(journal.Event{}, journal.ErrClosed)
				return
			}
		}
	}
}

// direct asks a replica for a batch of partition p's messages on subject
// from seq (jsread.Reader.Direct), bounded by Timeout.
func (s *Store) direct(ctx context.Context, p *part, seq uint64, subject string, size int) (jsread.Batch, error) {
	b, err := retryRead(ctx, s, func(ctx context.Context) (jsread.Batch, error) {
		s.directGets.Add(1)
		return s.rd.Direct(ctx, p.name, seq, subject, size)
	})
	if err == nil && s.directHook != nil {
		s.directHook(p.name, seq, &b)
	}
	return b, err
}

// leaderGet reads one message of partition p from its stream's leader,
// bounded by Timeout; jsread.ErrNotFound if none matches.
func (s *Store) leaderGet(ctx context.Context, p *part, q jsread.Query) (*jetstream.RawStreamMsg, error) {
	return retryRead(ctx, s, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		s.leaderGets.Add(1)
		return jsread.Leader(ctx, s.cfg.Conn, "", p.name, q)
	})
}

// readAttempt bounds one read request within Timeout (a quarter of it, at
// least half a second): a request that reaches a stream while its
// leadership moves may get no answer at all.
func (s *Store) readAttempt() time.Duration { return max(s.cfg.Timeout/4, 500*time.Millisecond) }

// retryRead runs read, bounded by Timeout (and ctx), and asks again while
// the stream answers "temporarily unavailable" (no leader during an
// election or a leader move), nobody answers, or one attempt got no reply
// within readAttempt: a read is safe to repeat, and a command should not
// fail because its stream's leader moved a moment before.
func retryRead[T any](ctx context.Context, s *Store, read func(context.Context) (T, error)) (T, error) {
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	wait := 10 * time.Millisecond
	for {
		actx, acancel := context.WithTimeout(rctx, s.readAttempt())
		v, err := read(actx)
		attemptTimedOut := actx.Err() != nil
		acancel()
		retry := errors.Is(err, journal.ErrUnavailable) || errors.Is(err, jsread.ErrNoResponders) ||
			(attemptTimedOut && errors.Is(err, context.DeadlineExceeded))
		if err == nil || !retry || rctx.Err() != nil {
			return v, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-rctx.Done():
			t.Stop()
			return v, err
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// LastPosition is the position of a partition's last event, by any
// writer, as far as this Store has seen; see journal.Store.
func (s *Store) LastPosition(partition int) uint64 {
	p, err := s.partition(partition)
	if err != nil {
		return 0
	}
	return p.lastEvent.Load()
}

// WaitPosition blocks until a partition's last event position exceeds
// after; see journal.Store. It wakes on this Store's own appends and on
// other Stores' (other nodes'), which the partition's watcher sees within
// about a millisecond of their ack (watch.go).
func (s *Store) WaitPosition(ctx context.Context, partition int, after uint64) (uint64, error) {
	p, err := s.partition(partition)
	if err != nil {
		return 0, err
	}
	for {
		if err := s.check(); err != nil {
			return p.lastEvent.Load(), err
		}
		p.nmu.Lock()
		ch := p.notify
		p.nmu.Unlock()
		if last := p.lastEvent.Load(); last > after {
			return last, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return p.lastEvent.Load(), ctx.Err()
		case <-s.closing:
		}
	}
}

// advance moves the partition's last event position forward (never
// back) and wakes its waiters. It is called by this Store's writes and by
// the partition's watcher (other Stores' writes).
func (p *part) advance(lastEvent uint64) {
	if lastEvent <= p.lastEvent.Load() {
		return
	}
	p.nmu.Lock()
	defer p.nmu.Unlock()
	if lastEvent <= p.lastEvent.Load() {
		return
	}
	p.lastEvent.Store(lastEvent)
	close(p.notify)
	p.notify = make(chan struct{})
}

// lastMsg is the last message on a literal subject, or nil.
func (s *Store) lastMsg(ctx context.Context, p *part, subject string) (*jetstream.RawStreamMsg, error) {
	m, err := s.leaderGet(ctx, p, jsread.Query{LastBySubject: subject})
	if errors.Is(err, jsread.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: read %s: %w", p.name, err)
	}
	return m, nil
}

// headOf returns what is known of a stream, reading it on a cache miss.
// The caller holds p.mu.
func (s *Store) headOf(ctx context.Context, p *part, stream string) (head, error) {
	p.hmu.Lock()
	h, ok := p.heads[stream]
	p.hmu.Unlock()
	if ok {
		return h, nil
	}
	h, err := s.readHead(ctx, p, stream)
	if err != nil {
		return h, err
	}
	p.setHead(stream, h)
	return h, nil
}

// readHead reads what the stream's leader holds of an entity.
func (s *Store) readHead(ctx context.Context, p *part, stream string) (head, error) {
	var h head
	m, err := s.lastMsg(ctx, p, s.entitySubject(p.n, "e", stream))
	if err != nil {
		return h, err
	}
	if m != nil {
		ev, err := s.decodeEvent(p.n, m)
		if err != nil {
			return h, err
		}
		h.seq = ev.Sequence
	}
	t, err := s.lastMsg(ctx, p, s.entitySubject(p.n, "t", stream))
	if err != nil {
		return h, err
	}
	h.tombstoned = t != nil
	return h, nil
}

// maxCached bounds the heads and idempotency keys a partition's writer
// keeps; past it the cache starts again (entries are re-read on a miss).
const maxCached = 1 << 18

// setHead caches an entity's head. The caller holds p.mu.
func (p *part) setHead(stream string, h head) {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if len(p.heads) >= maxCached {
		p.resetLocked()
	}
	p.heads[stream] = h
}

// resetCache forgets what the writer knew of the entities and starts a
// new generation. The caller holds p.mu.
func (p *part) resetCache() {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	p.resetLocked()
}

func (p *part) resetLocked() {
	p.heads = map[string]head{}
	p.idem = map[idemKey]journal.AppendResult{}
	p.absent = map[idemKey]struct{}{}
	p.gen.Add(1)
}

// unlimited normalises a stream limit as the server stores it: 0 (not
// set) becomes -1 (no limit). Without it every open of a stream saw a
// difference and updated the stream, which made a cluster's first boot
// slow (one metadata update per stream per node).
func unlimited(v int64) int64 {
	if v <= 0 {
		return -1
	}
	return v
}
