package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsbatch"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsread"
)

// idemRecord is what an idempotency record holds: the result of the
// append that recorded the key.
type idemRecord struct {
	FirstSequence uint64 `json:"fs"`
	LastSequence  uint64 `json:"ls"`
	FirstPosition uint64 `json:"fp"`
	LastPosition  uint64 `json:"lp"`
	Reply         []byte `json:"r,omitempty"`
}

// msgID is a record's deterministic Nats-Msg-Id. The stream id is
// base64url-encoded: ids may hold bytes a header value cannot (a newline).
func msgID(typ, stream, n string) string {
	return typ + "." + b64.EncodeToString([]byte(stream)) + "." + n
}

// eventSize estimates an event's size as the store writes it (headers
// and payload).
func eventSize(e *journal.Event) int {
	n := len(e.Type) + len(e.ContentType) + len(e.Payload) + 64
	for _, t := range e.Tags {
		n += len(t) + len(hdrTag) + 4
	}
	for k, v := range e.Metadata {
		n += len(k) + len(v) + 6
	}
	return n
}

func (s *Store) validate(req *journal.AppendRequest) error {
	if _, _, err := journal.ParseStream(req.Stream); err != nil {
		return err
	}
	switch n := len(req.Events); {
	case n == 0:
		return fmt.Errorf("%w: append to %q has no events", journal.ErrInvalid, req.Stream)
	case n > s.cfg.MaxAppendEvents:
		return &journal.TooLargeError{Stream: req.Stream, Index: -1, Size: n, Limit: s.cfg.MaxAppendEvents}
	case len(req.IdempotencyKey) > 1024:
		return fmt.Errorf("%w: idempotency key of %d bytes is over 1024", journal.ErrInvalid, len(req.IdempotencyKey))
	case req.IdempotencyKey == "" && len(req.Reply) > 0:
		return fmt.Errorf("%w: a reply needs an idempotency key", journal.ErrInvalid)
	}
	for i := range req.Events {
		e := &req.Events[i]
		switch {
		case e.Type == "":
			return fmt.Errorf("%w: event %d of %q has an empty type", journal.ErrInvalid, i, req.Stream)
		case len(e.Type) > 1024 || strings.ContainsAny(e.Type, "\r\n\x00"):
			return fmt.Errorf("%w: event %d of %q has an invalid type", journal.ErrInvalid, i, req.Stream)
		case strings.ContainsAny(e.ContentType, "\r\n\x00"):
			return fmt.Errorf("%w: event %d of %q has an invalid content type", journal.ErrInvalid, i, req.Stream)
		}
		for _, t := range e.Tags {
			if t == "" || len(t) > 1024 || strings.ContainsAny(t, "\r\n\x00") {
				return fmt.Errorf("%w: event %d of %q has an invalid tag %q", journal.ErrInvalid, i, req.Stream, t)
			}
		}
		for k := range e.Metadata {
			if k == "" {
				return fmt.Errorf("%w: event %d of %q has an empty metadata key", journal.ErrInvalid, i, req.Stream)
			}
		}
		if size := eventSize(e); size > s.cfg.MaxEventSize {
			return &journal.TooLargeError{Stream: req.Stream, Index: i, Size: size, Limit: s.cfg.MaxEventSize}
		}
	}
	return nil
}

// Append appends atomically; see journal.Store. The partition's
// committer (commit.go) puts the appends of many entities waiting at once
// into one atomic batch, fenced by the stream's last sequence; one
// append's events and its idempotency record are always in one batch.
func (s *Store) Append(ctx context.Context, req journal.AppendRequest) (journal.AppendResult, error) {
	if err := s.validate(&req); err != nil {
		return journal.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return journal.AppendResult{}, err
	}
	if err := s.check(); err != nil {
		return journal.AppendResult{}, err
	}
	p := s.part(req.Stream)
	if s.cfg.RequireOwnership && !p.mayWrite.Load() {
		// Fail at once; the committer checks again under p.mu.
		p.mu.Lock()
		err := s.writable(p)
		p.mu.Unlock()
		if err != nil {
			return journal.AppendResult{}, err
		}
	}
	pd := &pending{ctx: ctx, req: req, done: make(chan struct{})}
	if err := s.prefetch(ctx, p, pd); err != nil || pd.dup {
		return pd.res, err
	}
	if err := p.enqueue(pd); err != nil {
		return journal.AppendResult{}, err
	}
	<-pd.done
	return pd.res, pd.err
}

// eventMsgs turns an append's events into messages, their entity
// sequences from first.
func (s *Store) eventMsgs(p *part, req *journal.AppendRequest, first uint64, msgs []*nats.Msg) ([]*nats.Msg, error) {
	subject := s.entitySubject(p.n, "e", req.Stream)
	for i := range req.Events {
		e := &req.Events[i]
		m := &nats.Msg{Subject: subject, Header: make(nats.Header, 4)}
		vals := make([]string, 3) // one backing array for the headers' values
		vals[0], vals[1] = strconv.FormatUint(first+uint64(i), 10), e.Type
		m.Header[hdrSeq], m.Header[hdrType] = vals[0:1:1], vals[1:2:2]
		if s.cfg.KeepEventTimes && !e.Time.IsZero() {
			vals[2] = strconv.FormatInt(e.Time.UnixNano(), 10)
			m.Header[hdrTime] = vals[2:3:3]
		}
		if e.ContentType != "" {
			m.Header[hdrContentType] = []string{e.ContentType}
		}
		if len(e.Tags) > 0 {
			m.Header[hdrTag] = append([]string(nil), e.Tags...)
		}
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return msgs, fmt.Errorf("%w: metadata of event %d: %v", journal.ErrInvalid, i, err)
			}
			m.Header[hdrMeta] = []string{string(b)}
		}
		m.Data = e.Payload
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// unresolved is a batch whose outcome is not known: the partition settles
// it before its next write.
type unresolved struct {
	expected uint64
	msgs     []*nats.Msg
}

// publish writes one fenced batch at the partition's fence and resolves
// an unknown outcome. The caller holds p.mu. On a conflict (another
// writer moved the fence) an owned partition is lost (*journal.FencedError);
// an unowned one drops its cache and re-reads the fence, since what it
// knew may be stale. An outcome that stays unknown is returned as an
// error wrapping jsbatch.ErrUnknownOutcome, and the batch is kept to be
// settled (landed, or refused) before the next write.
func (s *Store) publish(ctx context.Context, p *part, msgs []*nats.Msg) (jsbatch.Ack, error) {
	if err := s.settle(ctx, p); err != nil {
		return jsbatch.Ack{}, err
	}
	expected := p.last
	ack, err := s.publishAt(ctx, p, expected, msgs)
	switch {
	case err == nil:
		p.last = ack.LastSeq
	case fenceErr(err):
		err = s.moved(ctx, p, err)
	case errors.Is(err, jsbatch.ErrUnknownOutcome):
		p.unresolved = &unresolved{expected: expected, msgs: msgs}
	}
	return ack, err
}

// publishAt publishes msgs fenced at expected, retrying what is safe to
// retry and resolving unknown outcomes by asking the stream's leader.
func (s *Store) publishAt(ctx context.Context, p *part, expected uint64, msgs []*nats.Msg) (jsbatch.Ack, error) {
	unknown := false
	for attempt := 0; ; attempt++ {
		ack, err := s.pub.Publish(ctx, p.name, expected, msgs)
		if s.publishHook != nil {
			ack, err = s.publishHook("publish", ack, err)
		}
		if errors.Is(err, jsbatch.ErrUnknownOutcome) || errors.Is(err, jsbatch.ErrDuplicate) {
			// A timeout is not a failure: ask the leader where the batch is.
			unknown = true
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
			ack, err = s.pub.Resolve(rctx, p.name, expected, msgs)
			cancel()
			if s.publishHook != nil {
				ack, err = s.publishHook("resolve", ack, err)
			}
			if errors.Is(err, jsbatch.ErrNotLanded) && attempt < 3 && ctx.Err() == nil {
				continue // the same batch, the same ids: lands once at most
			}
		}
		if (errors.Is(err, jsbatch.ErrInFlight) || errors.Is(err, jsbatch.ErrIncomplete)) && attempt < 3 {
			continue // nothing landed: the same batch again
		}
		if err != nil && unknown && !fenceErr(err) && !errors.Is(err, jsbatch.ErrUnknownOutcome) {
			err = fmt.Errorf("%w: %w", jsbatch.ErrUnknownOutcome, err)
		}
		return ack, err
	}
}

// settle finds out what became of the partition's unresolved batch, if
// any, before a new write: it publishes it again (same fence, same ids: it
// lands once at most, or is found). The caller holds p.mu.
func (s *Store) settle(ctx context.Context, p *part) error {
	u := p.unresolved
	if u == nil {
		return nil
	}
	ack, err := s.publishAt(ctx, p, u.expected, u.msgs)
	switch {
	case err == nil:
		s.log.Info("a batch of unknown outcome landed", "stream", p.name, "first", ack.FirstSeq, "last", ack.LastSeq)
		p.unresolved = nil
		p.last = ack.LastSeq
		// Its callers were told the outcome is unknown: forget what
		// they would have changed, read it again.
		p.resetCache()
		// Its events are in the log: LastPosition covers them (a retry
		// with the same idempotency key is answered with their
		// positions, and a reader waits for those).
		for i := len(u.msgs) - 1; i >= 0; i-- {
			if s.isEvent(p.n, u.msgs[i].Subject) {
				p.advance(ack.FirstSeq + uint64(i))
				break
			}
		}
		return nil
	case fenceErr(err):
		p.unresolved = nil
		return s.moved(ctx, p, err)
	}
	return fmt.Errorf("partition %d has a batch of unknown outcome that cannot be settled yet: %w", p.n, err)
}

// moved handles a write refused because the stream's fence moved. The
// caller holds p.mu.
func (s *Store) moved(ctx context.Context, p *part, err error) error {
	if p.own.owned {
		// Never refresh and carry on: a newer owner took over.
		return s.fenced(ctx, p, err)
	}
	s.log.Warn("partition fence moved: another writer appended", "stream", p.name, "expected", p.last, "err", err)
	p.resetCache()
	if last, lerr := s.pub.LastSequence(ctx, p.name); lerr == nil {
		p.last = last
	}
	return err
}

// Idempotent looks up an idempotency key; see journal.Store.
func (s *Store) Idempotent(ctx context.Context, stream, key string) (journal.AppendResult, bool, error) {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return journal.AppendResult{}, false, err
	}
	if err := ctx.Err(); err != nil {
		return journal.AppendResult{}, false, err
	}
	if err := s.check(); err != nil {
		return journal.AppendResult{}, false, err
	}
	if key == "" {
		return journal.AppendResult{}, false, nil
	}
	p := s.part(stream)
	k := idemKey{stream, key}
	gen := p.gen.Load()
	p.hmu.Lock()
	r, ok := p.idem[k]
	p.hmu.Unlock()
	if ok {
		return r, true, nil
	}
	r, ok, err := s.idempotent(ctx, p, stream, key)
	if err == nil && !ok {
		p.hmu.Lock()
		if p.gen.Load() == gen { // read in this generation
			if len(p.absent) >= maxCached {
				p.absent = map[idemKey]struct{}{} // a hint only: start again
			}
			p.absent[k] = struct{}{}
		}
		p.hmu.Unlock()
	}
	return r, ok, err
}

func (s *Store) idempotent(ctx context.Context, p *part, stream, key string) (journal.AppendResult, bool, error) {
	m, err := s.lastMsg(ctx, p, s.idemSubject(p.n, stream, key))
	if err != nil || m == nil {
		return journal.AppendResult{}, false, err
	}
	var r idemRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return journal.AppendResult{}, false, corrupt(stream, 0, m.Sequence, fmt.Errorf("idempotency record: %w", err))
	}
	if r.FirstPosition == 0 || r.FirstPosition > r.LastPosition || r.LastPosition >= m.Sequence {
		// Its events are written before it, in its batch.
		return journal.AppendResult{}, false, corrupt(stream, 0, m.Sequence,
			fmt.Errorf("idempotency record: events at positions %d-%d, not before the record", r.FirstPosition, r.LastPosition))
	}
	// The record is committed (read from the leader), and so are the
	// events of its batch: LastPosition covers them, also when the batch
	// is one whose outcome this Store has not settled yet.
	p.advance(r.LastPosition)
	return journal.AppendResult{
		FirstSequence: r.FirstSequence, LastSequence: r.LastSequence, Partition: p.n,
		FirstPosition: r.FirstPosition, LastPosition: r.LastPosition, Duplicate: true, Reply: r.Reply,
	}, true, nil
}

// Info describes a stream; see journal.Store.
func (s *Store) Info(ctx context.Context, stream string) (journal.StreamInfo, error) {
	info := journal.StreamInfo{Stream: stream}
	if _, _, err := journal.ParseStream(stream); err != nil {
		return info, err
	}
	if err := ctx.Err(); err != nil {
		return info, err
	}
	if err := s.check(); err != nil {
		return info, err
	}
	p := s.part(stream)
	subject := s.entitySubject(p.n, "e", stream)
	last, err := s.lastMsg(ctx, p, subject)
	if err != nil {
		return info, err
	}
	if last != nil {
		ev, err := s.decodeEvent(p.n, last)
		if err != nil {
			return info, err
		}
		info.LastSequence, info.Last = ev.Sequence, ev.Time
		first, err := s.leaderGet(ctx, p, jsread.Query{Seq: 1, NextBySubject: subject})
		if err == nil {
			info.First = first.Time
		}
		rctx, cancel := s.ctx(ctx)
		si, ierr := p.stream.Info(rctx, jetstream.WithSubjectFilter(subject))
		cancel()
		if err := errors.Join(err, ierr); err != nil {
			return info, fmt.Errorf("jsstore: info of %q: %w", stream, err)
		}
		info.Count = si.State.Subjects[subject]
	}
	t, err := s.lastMsg(ctx, p, s.entitySubject(p.n, "t", stream))
	if err != nil {
		return info, err
	}
	info.Tombstoned = t != nil
	return info, nil
}

// Streams yields the ids of the streams of one kind ("" for all), in
// lexical order; see journal.Store.
func (s *Store) Streams(ctx context.Context, kind string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if strings.ContainsAny(kind, "/\x00") {
			yield("", fmt.Errorf("%w: kind %q", journal.ErrInvalid, kind))
			return
		}
		if err := s.check(); err != nil {
			yield("", err)
			return
		}
		var ids []string
		for _, p := range s.parts {
			filter := s.subject(p.n, "e.>")
			if kind != "" {
				filter = s.subject(p.n, "e."+b64.EncodeToString([]byte(kind))+".*")
			}
			rctx, cancel := s.ctx(ctx)
			si, err := p.stream.Info(rctx, jetstream.WithSubjectFilter(filter))
			cancel()
			if err != nil {
				yield("", fmt.Errorf("jsstore: streams of %s: %w", p.name, err))
				return
			}
			for subj := range si.State.Subjects {
				id, err := s.streamOfSubject(p.n, subj)
				if err != nil {
					yield("", corrupt("(partition "+strconv.Itoa(p.n)+")", 0, 0, err))
					return
				}
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		for _, id := range ids {
			if !yield(id, nil) {
				return
			}
		}
	}
}

// SaveSnapshot stores a snapshot; see journal.Store. It is one message on
// the stream's snapshot subject, fenced like an append; older ones are
// purged.
func (s *Store) SaveSnapshot(ctx context.Context, snap journal.Snapshot) error {
	if _, _, err := journal.ParseStream(snap.Stream); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if snap.Sequence == 0 {
		return fmt.Errorf("%w: snapshot of %q at sequence 0", journal.ErrInvalid, snap.Stream)
	}
	if len(snap.Data) > s.cfg.MaxSnapshotSize {
		return &journal.TooLargeError{Stream: snap.Stream, Index: -1, Size: len(snap.Data), Limit: s.cfg.MaxSnapshotSize}
	}
	if err := s.check(); err != nil {
		return err
	}
	p := s.part(snap.Stream)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := s.writable(p); err != nil {
		return err
	}
	h, err := s.headOf(ctx, p, snap.Stream)
	if err != nil {
		return err
	}
	if h.tombstoned {
		return fmt.Errorf("snapshot of %q: %w", snap.Stream, journal.ErrTombstoned)
	}
	if snap.Sequence > h.seq {
		return fmt.Errorf("%w: snapshot of %q at sequence %d, beyond its last sequence %d", journal.ErrInvalid, snap.Stream, snap.Sequence, h.seq)
	}
	subject := s.entitySubject(p.n, "s", snap.Stream)
	if old, err := s.lastMsg(ctx, p, subject); err != nil {
		return err
	} else if old != nil {
		if seq, _ := strconv.ParseUint(old.Header.Get(hdrSeq), 10, 64); seq > snap.Sequence {
			return nil // an older snapshot does not replace a newer one
		}
	}
	m := nats.NewMsg(subject)
	m.Header.Set(hdrSeq, strconv.FormatUint(snap.Sequence, 10))
	m.Header.Set(jsbatch.HeaderMsgID, msgID("s", snap.Stream, strconv.FormatUint(p.last+1, 10)))
	m.Data = snap.Data
	ack, err := s.publish(ctx, p, []*nats.Msg{m})
	if err != nil {
		return fmt.Errorf("snapshot of %q: %w", snap.Stream, err)
	}
	p.last = ack.LastSeq
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	if err := p.stream.Purge(rctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeKeep(1)); err != nil {
		s.log.Warn("could not purge older snapshots", "stream", snap.Stream, "err", err)
	}
	return nil
}

// LoadSnapshot returns a stream's latest snapshot; see journal.Store.
func (s *Store) LoadSnapshot(ctx context.Context, stream string) (journal.Snapshot, error) {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return journal.Snapshot{}, err
	}
	if err := ctx.Err(); err != nil {
		return journal.Snapshot{}, err
	}
	if err := s.check(); err != nil {
		return journal.Snapshot{}, err
	}
	p := s.part(stream)
	m, err := s.lastMsg(ctx, p, s.entitySubject(p.n, "s", stream))
	if err != nil {
		return journal.Snapshot{}, err
	}
	if m == nil {
		return journal.Snapshot{}, fmt.Errorf("snapshot of %q: %w", stream, journal.ErrNotFound)
	}
	seq, err := strconv.ParseUint(m.Header.Get(hdrSeq), 10, 64)
	if err != nil {
		return journal.Snapshot{}, corrupt(stream, 0, m.Sequence, fmt.Errorf("snapshot header %s: %w", hdrSeq, err))
	}
	return journal.Snapshot{Stream: stream, Sequence: seq, Time: m.Time, Data: m.Data}, nil
}

// Tombstone closes a stream for good; see journal.Store.
func (s *Store) Tombstone(ctx context.Context, stream string) error {
	if _, _, err := journal.ParseStream(stream); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.check(); err != nil {
		return err
	}
	p := s.part(stream)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := s.writable(p); err != nil {
		return err
	}
	h, err := s.headOf(ctx, p, stream)
	if err != nil || h.tombstoned {
		return err
	}
	m := nats.NewMsg(s.entitySubject(p.n, "t", stream))
	m.Header.Set(jsbatch.HeaderMsgID, msgID("t", stream, ""))
	m.Data = []byte(time.Now().UTC().Format(time.RFC3339Nano))
	ack, err := s.publish(ctx, p, []*nats.Msg{m})
	if err != nil {
		return fmt.Errorf("tombstone %q: %w", stream, err)
	}
	p.last = ack.LastSeq
	h.tombstoned = true
	p.setHead(stream, h)
	return nil
}

// Stats summarises the store; see journal.Store.
func (s *Store) Stats(ctx context.Context) (journal.Stats, error) {
	if err := ctx.Err(); err != nil {
		return journal.Stats{}, err
	}
	if err := s.check(); err != nil {
		return journal.Stats{}, err
	}
	st := journal.Stats{Heads: make([]uint64, len(s.parts))}
	for _, p := range s.parts {
		rctx, cancel := s.ctx(ctx)
		si, err := p.stream.Info(rctx, jetstream.WithSubjectFilter(s.subject(p.n, "e.>")))
		cancel()
		if err != nil {
			return journal.Stats{}, fmt.Errorf("jsstore: stats of %s: %w", p.name, err)
		}
		st.Streams += uint64(len(si.State.Subjects))
		for _, c := range si.State.Subjects {
			st.Events += c
		}
		st.Heads[p.n] = p.lastEvent.Load()
	}
	return st, nil
}
