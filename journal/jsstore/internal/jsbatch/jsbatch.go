package jsbatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsread"
)

// Headers of an atomic batch (nats-server stream.go).
const (
	HeaderBatchID     = "Nats-Batch-Id"
	HeaderBatchSeq    = "Nats-Batch-Sequence"
	HeaderBatchCommit = "Nats-Batch-Commit"
	// HeaderMsgID deduplicates a message in the stream's window.
	HeaderMsgID = "Nats-Msg-Id"

	headerExpectedLastSeq   = "Nats-Expected-Last-Sequence"
	headerExpectedStream    = "Nats-Expected-Stream"
	headerExpectedLastMsgID = "Nats-Expected-Last-Msg-Id"
)

// MaxMessages is the server's default limit of messages in one atomic
// batch (nats-server JetStreamLimits.MaxBatchSize).
const MaxMessages = 1000

// Config configures a Publisher. The zero value is the defaults.
type Config struct {
	// Timeout bounds each wait for the server's reply (the first
	// message's, the commit's, a stream info or message read), within the
	// caller's ctx. Default: 5 s, JetStream's own default API timeout. A
	// stream whose leader died answers nothing until a new one is elected
	// (4-9 s), so a short Timeout turns that wait into retries.
	Timeout time.Duration
	// MaxMessages is the most messages Publish sends in one batch; more
	// are refused with ErrTooLarge before anything is sent. Default and
	// maximum: MaxMessages (1,000), the server's default limit; set it
	// lower only if the servers were configured lower.
	MaxMessages int
	// SkipFirstAck sends the first message of a batch without waiting for
	// the server's reply. Default false: the first message is a request,
	// so that a refusal that comes before the commit (no leader, too many
	// open batches, atomic publish disabled) is reported as itself rather
	// than as an incomplete batch at the commit, and a batch is not
	// streamed into a stream that is not there. It costs one round trip
	// per batch of more than one message.
	SkipFirstAck bool
	// APIPrefix is the JetStream API's subject prefix. Default "$JS.API".
	APIPrefix string
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = MaxMessages
	}
	if c.APIPrefix == "" {
		c.APIPrefix = jetstream.DefaultAPIPrefix
	}
}

// Validate reports a Config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("%w: negative Timeout %v", ErrInvalid, c.Timeout)
	case c.MaxMessages < 0 || c.MaxMessages > MaxMessages:
		return fmt.Errorf("%w: MaxMessages %d not in 1..%d", ErrInvalid, c.MaxMessages, MaxMessages)
	}
	return nil
}

// Ack is a landed batch: its messages are at FirstSeq..LastSeq of Stream,
// in the order given.
type Ack struct {
	Stream            string
	FirstSeq, LastSeq uint64
}

// Publisher publishes atomic batches over one connection. It holds no
// goroutines and no subscriptions of its own (replies go through the
// connection's shared request inbox); it is safe for concurrent use, but a
// stream's fence admits one batch in flight per expected sequence, so a
// partition's owner publishes its batches one after another.
type Publisher struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg Config

	// beforeCommit, when set (by tests), runs after the staged messages
	// are sent and before the commit.
	beforeCommit func()
}

// New returns a Publisher on nc, which the caller owns and closes.
func New(nc *nats.Conn, cfg Config) (*Publisher, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalid)
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.NewWithAPIPrefix(nc, cfg.APIPrefix)
	if err != nil {
		return nil, fmt.Errorf("jsbatch: %w", err)
	}
	return &Publisher{nc: nc, js: js, cfg: cfg}, nil
}

// batchSeqs holds the text of every batch sequence, so that a message's
// header costs no formatting.
var batchSeqs = func() (s [MaxMessages + 1]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

// Publish appends msgs to stream as one atomic batch, if and only if the
// stream's last sequence is expected (0: empty). On success the messages
// are at expected+1 .. expected+len(msgs), in order, with their headers.
//
// Publish sets its own headers on msgs, overwriting what an earlier call
// set (Nats-Batch-Id, Nats-Batch-Sequence, Nats-Batch-Commit, and on the
// first message Nats-Expected-Last-Sequence and Nats-Expected-Stream), so
// the same slice can be published again; msgs must not be used by others
// meanwhile. Other headers are kept, per message: Nats-Msg-Id (give the
// first message a deterministic id, so that a retry of a batch that
// landed is refused whole with ErrDuplicate while the id is in the
// stream's duplicate window, and Resolve can recognise the batch; since a
// batch is atomic, ids on the other messages add nothing but the server's
// work), Nats-Expected-Last-Subject-Sequence (checked per message against
// the stream before the batch, once per subject).
//
// Errors: *ConflictError (another writer appended), ErrInFlight (retry
// with the same expected sequence), ErrDuplicate, ErrIncomplete,
// ErrTooManyBatches, ErrUnavailable, ErrTooLarge, ErrInvalid, ErrNoStream
// or a *ServerError: nothing landed. ErrUnknownOutcome: the commit was
// sent and no clear reply came; see Resolve.
func (p *Publisher) Publish(ctx context.Context, stream string, expected uint64, msgs []*nats.Msg) (Ack, error) {
	n := len(msgs)
	switch {
	case stream == "":
		return Ack{}, fmt.Errorf("%w: no stream", ErrInvalid)
	case n == 0:
		return Ack{}, fmt.Errorf("%w: no messages", ErrInvalid)
	case n > p.cfg.MaxMessages:
		return Ack{}, fmt.Errorf("%w: %d messages, at most %d in one batch", ErrTooLarge, n, p.cfg.MaxMessages)
	}
	id := nuid.Next()
	if err := p.prepare(stream, id, expected, msgs); err != nil {
		return Ack{}, err
	}
	if err := ctx.Err(); err != nil {
		return Ack{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}

	// Until the commit is sent, nothing can land: the server drops an
	// uncommitted batch 10 s after its last message.
	rest := msgs[:n-1]
	if n > 1 && !p.cfg.SkipFirstAck {
		resp, err := p.request(ctx, msgs[0])
		if err != nil {
			return Ack{}, fmt.Errorf("%w: first message: %w", ErrUnavailable, err)
		}
		if err := parseStaged(resp.Data, stream, expected); err != nil {
			return Ack{}, err
		}
		rest = msgs[1 : n-1]
	}
	for _, m := range rest {
		if err := p.nc.PublishMsg(m); err != nil {
			return Ack{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	if p.beforeCommit != nil {
		p.beforeCommit()
	}
	if err := ctx.Err(); err != nil {
		return Ack{}, fmt.Errorf("%w: before the commit: %w", ErrUnavailable, err)
	}

	// From here on the batch may land.
	resp, err := p.request(ctx, msgs[n-1])
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			// Nobody received the commit: no stream leader listens.
			return Ack{}, fmt.Errorf("%w: commit: %w", ErrUnavailable, err)
		}
		return Ack{}, fmt.Errorf("%w: commit: %w", ErrUnknownOutcome, err)
	}
	return parseCommit(resp.Data, stream, id, n, expected)
}

// request sends m and waits for its reply, within ctx and Config.Timeout.
func (p *Publisher) request(ctx context.Context, m *nats.Msg) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	return p.nc.RequestMsgWithContext(ctx, m)
}

// prepare validates msgs and sets the batch's headers on them.
func (p *Publisher) prepare(stream, id string, expected uint64, msgs []*nats.Msg) error {
	n := len(msgs)
	max := p.nc.MaxPayload()
	var ids map[string]int
	for i, m := range msgs {
		if m == nil || m.Subject == "" {
			return fmt.Errorf("%w: message %d has no subject", ErrInvalid, i)
		}
		if m.Header == nil {
			m.Header = nats.Header{}
		}
		h := m.Header
		if h.Get(headerExpectedLastMsgID) != "" {
			// The server refuses the whole batch (10177).
			return fmt.Errorf("%w: message %d: %s is not supported in atomic batches", ErrInvalid, i, headerExpectedLastMsgID)
		}
		if mid := h.Get(HeaderMsgID); mid != "" {
			if ids == nil {
				ids = make(map[string]int, n)
			}
			if j, dup := ids[mid]; dup {
				// The server refuses the whole batch (10201).
				return fmt.Errorf("%w: messages %d and %d have %s %q", ErrInvalid, j, i, HeaderMsgID, mid)
			}
			ids[mid] = i
		}
		m.Reply = ""
		h.Set(HeaderBatchID, id)
		h.Set(HeaderBatchSeq, batchSeqs[i+1])
		if i == 0 {
			h.Set(headerExpectedLastSeq, strconv.FormatUint(expected, 10))
			h.Set(headerExpectedStream, stream)
		} else {
			// Only the first message may carry it (10164 otherwise).
			h.Del(headerExpectedLastSeq)
			h.Del(headerExpectedStream)
		}
		if i == n-1 {
			h.Set(HeaderBatchCommit, "1")
		} else {
			h.Del(HeaderBatchCommit)
		}
		if size := int64(len(m.Data) + headerSize(h)); size > max {
			return fmt.Errorf("%w: message %d is %d bytes with its headers, the connection's max payload is %d", ErrTooLarge, i, size, max)
		}
	}
	return nil
}

// headerSize is the size of h as nats.go encodes it.
func headerSize(h nats.Header) int {
	size := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			size += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return size
}

// LastSequence is the stream's last sequence as its leader reports it
// (0: empty). JetStream serves stream info from the stream's leader; when
// the group has no leader its replicas answer, possibly stale, and
// LastSequence returns ErrUnavailable instead. A leader cut off by a
// partition can still answer until it steps down; since every append is
// fenced, a stale answer can only cause a conflict, never a fork.
func (p *Publisher) LastSequence(ctx context.Context, stream string) (uint64, error) {
	last, _, err := p.lastSequence(ctx, stream)
	return last, err
}

func (p *Publisher) lastSequence(ctx context.Context, stream string) (uint64, jetstream.Stream, error) {
	s, err := p.stream(ctx, stream)
	if err != nil {
		return 0, nil, err
	}
	info := s.CachedInfo()
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return 0, nil, fmt.Errorf("%w: stream %q has no leader", ErrUnavailable, stream)
	}
	return info.State.LastSeq, s, nil
}

func (p *Publisher) stream(ctx context.Context, stream string) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	s, err := p.js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("%w: %q", ErrNoStream, stream)
	case err != nil:
		return nil, fmt.Errorf("%w: stream %q: %w", ErrUnavailable, stream, err)
	}
	return s, nil
}

// Resolve finds out whether a batch that Publish reported as
// ErrUnknownOutcome landed. It needs the same stream, expected sequence
// and msgs, and the first message must carry a Nats-Msg-Id. It returns the
// batch's Ack if the stream holds it right after expected;
// ErrNotLanded if the stream's last sequence is still expected (the batch
// may still be in flight in the leader's log: retry it with the same
// expected sequence and ids, which lands it once or reports it
// conflicted or duplicate); *ConflictError if another writer's messages
// follow expected; ErrUnavailable if there is no leader to ask.
func (p *Publisher) Resolve(ctx context.Context, stream string, expected uint64, msgs []*nats.Msg) (Ack, error) {
	if len(msgs) == 0 || msgs[0] == nil || msgs[0].Header.Get(HeaderMsgID) == "" {
		return Ack{}, fmt.Errorf("%w: Resolve needs a %s on the first message", ErrInvalid, HeaderMsgID)
	}
	last, _, err := p.lastSequence(ctx, stream)
	if err != nil {
		return Ack{}, err
	}
	switch {
	case last == expected:
		return Ack{}, ErrNotLanded
	case last < expected:
		return Ack{}, &ConflictError{Stream: stream, Expected: expected, Actual: last, ActualKnown: true}
	}
	gctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	// From the leader: a stream that allows direct gets would have
	// nats.go's GetMsg ask any replica, which may lag.
	m, err := jsread.Leader(gctx, p.nc, p.cfg.APIPrefix, stream, jsread.Query{Seq: expected + 1})
	if err != nil {
		return Ack{}, fmt.Errorf("%w: read sequence %d of %q: %w", ErrUnavailable, expected+1, stream, err)
	}
	if m.Header.Get(HeaderMsgID) != msgs[0].Header.Get(HeaderMsgID) {
		return Ack{}, &ConflictError{Stream: stream, Expected: expected, Actual: last, ActualKnown: true}
	}
	return Ack{Stream: stream, FirstSeq: expected + 1, LastSeq: expected + uint64(len(msgs))}, nil
}
