package lease

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of KV entries (nats.go's kv.go keeps its own unexported).
const (
	kvOperationHdr = "KV-Operation"
	kvPurge        = "PURGE"
)

// JetStream error codes of a failed compare-and-set (nats-server
// errors.json): 10071 carries the current last sequence; 10164 (no
// number) means another write to the subject is in flight at the leader,
// and is also seen spuriously right after an ack (shared FACTS), so it is
// retried with the same expected revision.
const (
	codeWrongLastSeq       = jetstream.JSErrCodeStreamWrongLastSequence
	codeWrongLastSeqFlight = jetstream.JSErrCodeStreamWrongLastSequenceConstant
)

// errForeign: the key holds a value that is not a lease record (someone
// else wrote to the bucket). Not retried; Acquire reports it.
var errForeign = errors.New("lease: the key holds a value this package did not write")

// record is the value of a lease entry.
type record struct {
	Holder string `json:"holder"`
	// Epoch is the holder's epoch; omitted by Acquire, whose write's own
	// revision is the epoch.
	Epoch uint64 `json:"epoch,omitempty"`
	TTL   int64  `json:"ttl_s"` // the entry's TTL in seconds
}

// entry is one read of a key.
type entry struct {
	rev     uint64 // the key's last revision; 0: no message at all
	live    bool   // a lease record, not a tombstone or an expiry marker
	holder  string
	epoch   uint64
	ttl     time.Duration
	written time.Time // the server's timestamp of rev
	msgID   string    // Nats-Msg-Id of rev
}

func (e entry) expiresIn(now time.Time) time.Duration {
	return max(0, e.written.Add(e.ttl).Sub(now))
}

// maxTTLSeconds is the longest TTL, in seconds, that a time.Duration holds.
const maxTTLSeconds = int64(math.MaxInt64 / time.Second)

func parseEntry(seq uint64, hdr nats.Header, data []byte, ts time.Time) (entry, error) {
	e := entry{rev: seq, written: ts, msgID: hdr.Get(nats.MsgIdHdr)}
	if hdr.Get(kvOperationHdr) != "" || hdr.Get(jetstream.MarkerReasonHeader) != "" {
		return e, nil // released, taken over, or expired at the server
	}
	var r record
	// A record this package wrote names a holder and a TTL of whole
	// seconds, at least one (Config.Validate), that a Duration can hold.
	if err := json.Unmarshal(data, &r); err != nil || r.Holder == "" || r.TTL < 1 || r.TTL > maxTTLSeconds {
		return e, fmt.Errorf("%w: revision %d: %q", errForeign, seq, truncate(data, 64))
	}
	e.live, e.holder, e.epoch, e.ttl = true, r.Holder, r.Epoch, time.Duration(r.TTL)*time.Second
	if e.epoch == 0 {
		e.epoch = seq
	}
	return e, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// msgGetResponse is the JetStream API's answer to STREAM.MSG.GET.
type msgGetResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// read reads the key's last message from the stream's leader (the
// STREAM.MSG.GET API, which only the leader answers), not by a direct get,
// which any replica answers and which lags right after a write. Still a
// hint: see Acquire.
func (s *Store) read(ctx context.Context, name string) (entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{s.prefix + name})
	if err != nil {
		return entry{}, err
	}
	m, err := s.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.stream, req)
	if err != nil {
		return entry{}, err
	}
	var resp msgGetResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return entry{}, fmt.Errorf("lease: read %q: %w", name, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return entry{}, nil
		}
		return entry{}, resp.Error
	}
	if resp.Message == nil {
		return entry{}, fmt.Errorf("lease: read %q: empty answer", name)
	}
	var hdr nats.Header
	if len(resp.Message.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return entry{}, fmt.Errorf("lease: read %q: %w", name, err)
		}
	}
	return parseEntry(resp.Message.Sequence, hdr, resp.Message.Data, resp.Message.Time)
}

// readRetry is read with up to Config.Attempts tries.
func (s *Store) readRetry(ctx context.Context, name string) (entry, error) {
	var last error
	for attempt := range s.cfg.Attempts {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt, 25*time.Millisecond, 500*time.Millisecond)); err != nil {
				break
			}
		}
		e, err := s.read(ctx, name)
		if err == nil || errors.Is(err, errForeign) {
			return e, err
		}
		last = err
	}
	return entry{}, fmt.Errorf("%w: read: %w", ErrUnavailable, errors.Join(last, ctx.Err()))
}

// write is one compare-and-set write of a key.
type write struct {
	name     string
	expected uint64 // the key's last revision we expect; 0: no message
	data     []byte // the record (nil with purge)
	purge    bool   // write a tombstone that rolls up the key
	ttl      time.Duration
}

// casError: the compare-and-set failed, another write is the latest.
type casError struct {
	actual uint64 // the latest revision, when known
}

func (e *casError) Error() string {
	return fmt.Sprintf("lease: compare-and-set failed: revision %d is the latest", e.actual)
}

func isCAS(err error) bool {
	var ce *casError
	return errors.As(err, &ce)
}

// outcome classifies a failed publish.
type outcome int

const (
	outcomeUnknown  outcome = iota // timeout, no responders, connection trouble: re-read and decide
	outcomeConflict                // the compare-and-set failed (10071)
	outcomeInFlight                // 10164: retry with the same expected revision
	outcomeRefused                 // any other API error: a definite refusal
)

func classify(err error) outcome {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return outcomeUnknown
	}
	switch {
	case apiErr.ErrorCode == codeWrongLastSeq:
		return outcomeConflict
	case apiErr.ErrorCode == codeWrongLastSeqFlight:
		return outcomeInFlight
	case apiErr.Code == 503 || apiErr.Code == 408:
		return outcomeUnknown
	default:
		return outcomeRefused
	}
}

// lastSeqOf parses the sequence from "wrong last sequence: N".
func lastSeqOf(err error) uint64 {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return 0
	}
	i := strings.LastIndexByte(apiErr.Description, ':')
	if i < 0 {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(apiErr.Description[i+1:]), 10, 64)
	return n
}

// verdict is what a read after an ambiguous write says about it.
type verdict int

const (
	pending    verdict = iota // not visible (yet): resend the same message
	written                   // our message is the key's latest
	superseded                // a newer message by someone else: our compare-and-set can never apply
)

// decide judges an ambiguous write of message id from a read e of its key,
// where expected was the write's expected revision. Only a revision newer
// than expected is evidence: a read that shows expected or older may come
// from a lagging replica, so the write is resent (the server deduplicates
// it by id, and its compare-and-set decides).
func decide(expected uint64, e entry, id string) verdict {
	switch {
	case e.rev <= expected:
		return pending
	case e.msgID == id:
		return written
	default:
		return superseded
	}
}

// write publishes w under compare-and-set with a fresh message id and
// returns the new revision, a *casError, ErrUnavailable (outcome unknown)
// or a refusal. An ambiguous failure is re-read and decided (decide); a
// message still pending is resent with the same id, so a copy that lands
// late is deduplicated by the server (its window is 2 minutes).
func (s *Store) write(ctx context.Context, w write) (uint64, error) {
	id := rand.Text()
	var last error
	for attempt := range s.cfg.Attempts {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt, 10*time.Millisecond, 500*time.Millisecond)); err != nil {
				break
			}
		}
		m := nats.NewMsg(s.prefix + w.name)
		m.Header.Set(nats.MsgIdHdr, id)
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.expected, 10))
		m.Header.Set(jetstream.MsgTTLHeader, w.ttl.String())
		if w.purge {
			m.Header.Set(kvOperationHdr, kvPurge)
			m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		}
		m.Data = w.data
		actx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		ack, err := s.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		last = err
		switch classify(err) {
		case outcomeRefused:
			return 0, err
		case outcomeInFlight:
			continue
		case outcomeConflict:
			actual := lastSeqOf(err)
			if attempt == 0 || actual <= w.expected {
				return 0, &casError{actual: actual}
			}
			// A resend met a newer revision: it may be our own first copy
			// if the server forgot the id (a new leader), so look.
		}
		if ctx.Err() != nil {
			break
		}
		e, rerr := s.read(ctx, w.name)
		if rerr != nil {
			s.log.Warn("lease write unanswered", "lease", w.name, "attempt", attempt+1, "err", err, "read_err", rerr)
			continue
		}
		switch decide(w.expected, e, id) {
		case written:
			return e.rev, nil
		case superseded:
			return 0, &casError{actual: e.rev}
		}
		s.log.Warn("lease write unanswered, resending", "lease", w.name, "attempt", attempt+1, "err", err)
	}
	return 0, fmt.Errorf("%w: %d attempt(s): %w", ErrUnavailable, s.cfg.Attempts, errors.Join(last, ctx.Err()))
}
