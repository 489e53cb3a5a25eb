// Package jsread reads messages of a JetStream stream, in the two ways
// that answer differently: Leader asks the stream's leader for one message
// (STREAM.MSG.GET: the leader's state, one round trip per message), and
// Reader.Direct asks for a batch of messages with a direct get
// (DIRECT.GET, the stream needs AllowDirect), which any replica may answer,
// possibly one that lags: its answer is a prefix of the committed log,
// never wrong, but maybe short. The journal store checks a direct batch
// against a position it knows to be committed (ADR 0011, "Reads").
//
// nats.go's Stream.GetMsg switches to direct gets by itself once a stream
// allows them, so a read that must see the leader's state (a fence, an
// entity's head, an idempotency record) uses Leader instead.
//
//	r, err := jsread.New(nc, jsread.Config{})
//	defer r.Close()
//	b, err := r.Direct(ctx, "TROUPE_P3", 1, "troupe.p3.e.>", 500)
//	m, err := jsread.Leader(ctx, nc, "", "TROUPE_P3", jsread.Query{LastBySubject: "troupe.p3.f"})
package jsread

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/troupe-dev/troupe/journal"
)

var (
	// ErrNotFound is returned when no message matches (the leader's
	// 10037, a direct get's 404 for Leader-style single reads).
	ErrNotFound = errors.New("jsread: no message found")
	// ErrNoResponders is wrapped when nothing answers the request: the
	// stream does not exist, or (direct gets) does not allow them or its
	// replicas have not subscribed yet.
	ErrNoResponders = errors.New("jsread: no responders")
	// ErrBadReply is wrapped when a reply does not parse or a direct
	// batch arrives with a message missing (its sequences do not chain).
	ErrBadReply = errors.New("jsread: bad reply")
)

// StatusError is a direct get answered with a status other than a message,
// 204 (end of batch) or 404 (nothing found): 408 (a bad request), 413,
// 500.
type StatusError struct {
	Code        int
	Description string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("jsread: direct get: status %d %s", e.Code, e.Description)
}

// Is makes a server-side status (5xx) match journal.ErrUnavailable.
func (e *StatusError) Is(target error) bool {
	return target == journal.ErrUnavailable && e.Code >= 500
}

// APIError is a JetStream API error from the stream's leader.
type APIError struct {
	Code        int    `json:"code"`
	ErrCode     uint16 `json:"err_code"`
	Description string `json:"description"`
}

func (e *APIError) Error() string {
	return fmt.Sprintf("jsread: %s (code %d, err_code %d)", e.Description, e.Code, e.ErrCode)
}

// Is makes JetStream's "temporarily unavailable" (503, e.g. a stream
// without a leader during an election) match journal.ErrUnavailable.
func (e *APIError) Is(target error) bool {
	return target == journal.ErrUnavailable && e.Code == 503
}

// errCodeNoMessage is JetStream's "no message found".
const errCodeNoMessage = 10037

// Query selects one message for Leader: the one at Seq, the first at or
// after Seq on NextBySubject (a filter, wildcards allowed), or the last on
// LastBySubject (wildcards allowed).
type Query struct {
	Seq           uint64 `json:"seq,omitempty"`
	NextBySubject string `json:"next_by_subj,omitempty"`
	LastBySubject string `json:"last_by_subj,omitempty"`
}

// Leader reads one message from the stream's leader (when the stream has
// no leader, a replica answers, as for every JetStream API request). It
// returns ErrNotFound when none matches. apiPrefix "" is "$JS.API.".
func Leader(ctx context.Context, nc *nats.Conn, apiPrefix, stream string, q Query) (*jetstream.RawStreamMsg, error) {
	if apiPrefix == "" {
		apiPrefix = jetstream.DefaultAPIPrefix
	}
	body, err := json.Marshal(q)
	if err != nil {
		return nil, err
	}
	reply, err := nc.RequestWithContext(ctx, apiPrefix+"STREAM.MSG.GET."+stream, body)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("%w: stream %s: %w", ErrNoResponders, stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("jsread: stream %s: %w", stream, err)
	}
	var resp struct {
		Error   *APIError `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("%w: stream %s: %w", ErrBadReply, stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeNoMessage:
		return nil, ErrNotFound
	case resp.Error != nil:
		return nil, resp.Error
	case resp.Message == nil:
		return nil, fmt.Errorf("%w: stream %s: no message in the reply", ErrBadReply, stream)
	}
	m := &jetstream.RawStreamMsg{Subject: resp.Message.Subject, Sequence: resp.Message.Sequence, Data: resp.Message.Data, Time: resp.Message.Time}
	if len(resp.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, fmt.Errorf("%w: stream %s sequence %d: headers: %w", ErrBadReply, stream, m.Sequence, err)
		}
	}
	return m, nil
}

// Config configures a Reader. The zero value is the defaults.
type Config struct {
	// APIPrefix is the JetStream API's subject prefix. Default "$JS.API.".
	APIPrefix string
	// MaxBytes bounds the bytes (subjects, headers and payloads) of one
	// direct batch; the replica stops after the message that reaches it,
	// so a batch always holds at least one message. Default 4 MiB.
	MaxBytes int
}

// Reader reads batches of a stream's messages with direct gets over one
// connection. Its replies come to one subscription of its own (one
// nats.go goroutine), which Close removes. It is safe for concurrent use.
type Reader struct {
	nc     *nats.Conn
	cfg    Config
	inbox  string // the subscription's prefix: inbox + token
	sub    *nats.Subscription
	next   atomic.Uint64
	mu     sync.Mutex
	waits  map[string]*waiter
	closed bool
}

// waiter is one direct batch waiting for its replies.
type waiter struct {
	ch       chan *nats.Msg // capacity: every reply the request can get
	overflow atomic.Bool
}

// New returns a Reader on nc, which the caller owns and closes after the
// Reader.
func New(nc *nats.Conn, cfg Config) (*Reader, error) {
	if nc == nil {
		return nil, errors.New("jsread: nil connection")
	}
	if cfg.APIPrefix == "" {
		cfg.APIPrefix = jetstream.DefaultAPIPrefix
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 4 << 20
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("jsread: negative MaxBytes %d", cfg.MaxBytes)
	}
	r := &Reader{nc: nc, cfg: cfg, inbox: nc.NewInbox() + "." + nuid.Next() + ".", waits: map[string]*waiter{}}
	sub, err := nc.Subscribe(r.inbox+"*", r.dispatch)
	if err != nil {
		return nil, fmt.Errorf("jsread: subscribe: %w", err)
	}
	// Each waiter's channel bounds what it holds; the subscription itself
	// must not drop a reply (a dropped one fails the batch).
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("jsread: subscribe: %w", err)
	}
	r.sub = sub
	return r, nil
}

// Close removes the Reader's subscription; later reads fail. It is
// idempotent.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.sub.Unsubscribe()
}

// dispatch hands a reply to its waiter. It runs on the subscription's
// goroutine and never blocks.
func (r *Reader) dispatch(m *nats.Msg) {
	token := strings.TrimPrefix(m.Subject, r.inbox)
	r.mu.Lock()
	w := r.waits[token]
	r.mu.Unlock()
	if w == nil {
		return // a batch given up on
	}
	select {
	case w.ch <- m:
	default:
		w.overflow.Store(true)
	}
}

// Batch is the answer to a direct get of a batch: the messages the
// answering replica held from the requested sequence on the subject, in
// order, and how many more it held after the last (Pending). A replica
// that lags holds fewer than the leader: an empty batch, or Pending 0,
// say "nothing more here", not "nothing more in the stream".
type Batch struct {
	Msgs    []*jetstream.RawStreamMsg
	Pending uint64
}

// Headers a direct get adds to each message (removed from Batch.Msgs).
const (
	hdrStream     = "Nats-Stream"
	hdrSequence   = "Nats-Sequence"
	hdrSubject    = "Nats-Subject"
	hdrTimeStamp  = "Nats-Time-Stamp"
	hdrNumPending = "Nats-Num-Pending"
	hdrLastSeq    = "Nats-Last-Sequence"
	hdrStatus     = "Status"
	hdrDesc       = "Description"
)

// directRequest is the body of a direct get (nats-server
// JSApiMsgGetRequest).
type directRequest struct {
	Seq      uint64 `json:"seq"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// Direct asks for up to batch (at least 1) messages of stream from
// sequence from (at least 1) on subject (a filter, wildcards allowed; ""
// for every subject), within ctx. Whichever replica answers, the batch
// is a prefix of what it holds from there; see Batch.
//
// The replica sends one message per stored message (headers Nats-Stream,
// Nats-Subject, Nats-Sequence, Nats-Time-Stamp, and in a batch
// Nats-Num-Pending and Nats-Last-Sequence, the previous message's
// sequence), then a status 204 "EOB" with Nats-Num-Pending and
// Nats-Last-Sequence; or one status 404 when it holds nothing from there
// (nats-server stream.go getDirectRequest). Direct checks that the
// sequences chain, so a lost reply is an error (ErrBadReply), never a
// silent gap.
func (r *Reader) Direct(ctx context.Context, stream string, from uint64, subject string, batch int) (Batch, error) {
	batch = max(batch, 1)
	body, err := json.Marshal(directRequest{Seq: max(from, 1), NextFor: subject, Batch: batch, MaxBytes: r.cfg.MaxBytes})
	if err != nil {
		return Batch{}, err
	}
	token := strconv.FormatUint(r.next.Add(1), 36)
	w := &waiter{ch: make(chan *nats.Msg, batch+2)}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return Batch{}, errors.New("jsread: reader closed")
	}
	r.waits[token] = w
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waits, token)
		r.mu.Unlock()
	}()
	if err := r.nc.PublishRequest(r.cfg.APIPrefix+"DIRECT.GET."+stream, r.inbox+token, body); err != nil {
		return Batch{}, fmt.Errorf("jsread: direct get %s: %w", stream, err)
	}
	var (
		out  Batch
		prev uint64 // the last message's sequence
	)
	for {
		var m *nats.Msg
		select {
		case m = <-w.ch:
		case <-ctx.Done():
			return Batch{}, fmt.Errorf("jsread: direct get %s from %d: %w", stream, from, ctx.Err())
		}
		if w.overflow.Load() {
			return Batch{}, fmt.Errorf("%w: direct get %s from %d: more replies than asked for", ErrBadReply, stream, from)
		}
		if st := m.Header.Get(hdrStatus); st != "" && len(m.Data) == 0 {
			code, _ := strconv.Atoi(st)
			switch code {
			case 204: // end of batch
				if last, _ := strconv.ParseUint(m.Header.Get(hdrLastSeq), 10, 64); last != prev {
					return Batch{}, fmt.Errorf("%w: direct get %s from %d: batch ends at %d, last received %d", ErrBadReply, stream, from, last, prev)
				}
				out.Pending, _ = strconv.ParseUint(m.Header.Get(hdrNumPending), 10, 64)
				return out, nil
			case 404:
				if len(out.Msgs) > 0 {
					return Batch{}, fmt.Errorf("%w: direct get %s from %d: 404 after %d messages", ErrBadReply, stream, from, len(out.Msgs))
				}
				return Batch{}, nil
			case 503:
				return Batch{}, fmt.Errorf("%w: direct get %s", ErrNoResponders, stream)
			}
			return Batch{}, &StatusError{Code: code, Description: m.Header.Get(hdrDesc)}
		}
		sm, last, err := decode(stream, m)
		if err != nil {
			return Batch{}, fmt.Errorf("%w: direct get %s from %d: %w", ErrBadReply, stream, from, err)
		}
		if last != prev || sm.Sequence < max(from, 1) || sm.Sequence <= prev {
			return Batch{}, fmt.Errorf("%w: direct get %s from %d: message %d follows %d, expected after %d", ErrBadReply, stream, from, sm.Sequence, last, prev)
		}
		prev = sm.Sequence
		out.Msgs = append(out.Msgs, sm)
	}
}

// decode turns one message of a direct batch into a stream message and
// the sequence of the message sent before it (0: first).
func decode(stream string, m *nats.Msg) (*jetstream.RawStreamMsg, uint64, error) {
	h := m.Header
	if got := h.Get(hdrStream); got != stream {
		return nil, 0, fmt.Errorf("message of stream %q", got)
	}
	seq, err := strconv.ParseUint(h.Get(hdrSequence), 10, 64)
	if err != nil || seq == 0 {
		return nil, 0, fmt.Errorf("%s %q", hdrSequence, h.Get(hdrSequence))
	}
	subject := h.Get(hdrSubject)
	if subject == "" {
		return nil, 0, fmt.Errorf("sequence %d: no %s", seq, hdrSubject)
	}
	ts, err := time.Parse(time.RFC3339Nano, h.Get(hdrTimeStamp))
	if err != nil {
		return nil, 0, fmt.Errorf("sequence %d: %s: %w", seq, hdrTimeStamp, err)
	}
	last, err := strconv.ParseUint(h.Get(hdrLastSeq), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("sequence %d: %s %q", seq, hdrLastSeq, h.Get(hdrLastSeq))
	}
	for _, k := range []string{hdrStream, hdrSequence, hdrSubject, hdrTimeStamp, hdrNumPending, hdrLastSeq} {
		delete(h, k)
	}
	if len(h) == 0 {
		h = nil
	}
	return &jetstream.RawStreamMsg{Subject: subject, Sequence: seq, Header: h, Data: m.Data, Time: ts}, last, nil
}
