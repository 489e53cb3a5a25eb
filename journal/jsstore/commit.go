package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsbatch"
)

// Group commit. Each partition has one committer goroutine, its stream's
// only writer in this Store. Appends queue up while a batch is in flight
// and the next batch takes all of them: the appends of many entities
// become one atomic batch, fenced by the stream's last sequence on its
// first message. Each append is checked on its own (its entity's expected
// sequence, its idempotency key, a tombstone), so a conflicting append
// fails alone. A batch holds at most jsbatch.MaxMessages messages and
// maxBatchBytes bytes, split at append boundaries. Round trips that do
// not need the committer (reading an entity's head or an idempotency key
// on a cache miss) run in the caller's goroutine before it queues, valid
// for the cache generation they were read in.
//
// A busy partition gathers: after a batch of 8 appends or more, the
// committer waits, from the next append on, up to a quarter of that
// batch's round trip (at most 5 ms) for as many appends as the batch
// answered and had waiting (gatherFor). Without it, a partition's writers
// settle into two halves that take turns, each half a batch; on servers
// whose CPU is the limit, one batch of twice the size costs them much
// less per message, and the appends come back sooner.

// maxBatchBytes caps a batch's payloads (an append over it is one batch
// of its own).
const maxBatchBytes = 8 << 20

// maxGather bounds how long a busy partition's committer waits to gather
// its next batch, and gatherFrom is the smallest batch after which it
// does (gatherFor).
const (
	maxGather  = 5 * time.Millisecond
	gatherFrom = 8
)

// idemKey names an idempotency key of a stream.
type idemKey struct{ stream, key string }

// pending is one append waiting for the committer.
type pending struct {
	ctx context.Context
	req journal.AppendRequest

	// Read before queueing, valid while the partition's gen is gen.
	gen     uint64
	head    head
	hasHead bool
	dup     bool // the key was recorded before: res is the answer

	res  journal.AppendResult
	err  error
	done chan struct{} // closed when res and err are set
}

func (pd *pending) answer(res journal.AppendResult, err error) {
	pd.res, pd.err = res, err
	close(pd.done)
}

// prefetch reads, in the caller's goroutine, what the committer would
// otherwise read one append at a time: a recorded idempotency key (then
// pd.dup is set and pd.res is the answer) and the entity's head.
func (s *Store) prefetch(ctx context.Context, p *part, pd *pending) error {
	pd.gen = p.gen.Load()
	req := &pd.req
	if req.IdempotencyKey != "" && !req.KeyUnused {
		k := idemKey{req.Stream, req.IdempotencyKey}
		p.hmu.Lock()
		r, ok := p.idem[k]
		_, absent := p.absent[k]
		delete(p.absent, k)
		p.hmu.Unlock()
		if !ok && !absent {
			var err error
			if r, ok, err = s.idempotent(ctx, p, req.Stream, req.IdempotencyKey); err != nil {
				return err
			}
		}
		if ok {
			pd.res, pd.dup = r, true
			return nil
		}
	}
	p.hmu.Lock()
	_, ok := p.heads[req.Stream]
	p.hmu.Unlock()
	if !ok {
		h, err := s.readHead(ctx, p, req.Stream)
		if err != nil {
			return err
		}
		pd.head, pd.hasHead = h, true
	}
	return nil
}

// enqueue hands an append to the partition's committer.
func (p *part) enqueue(pd *pending) error {
	p.qmu.Lock()
	if p.qclosed {
		p.qmu.Unlock()
		return journal.ErrClosed
	}
	p.queue = append(p.queue, pd)
	wake := len(p.queue) == p.qwant
	p.qmu.Unlock()
	if wake {
		select {
		case p.qwake <- struct{}{}:
		default:
		}
	}
	return nil
}

// commitLoop is the partition's committer; it runs until Close, then
// answers what is still queued with ErrClosed.
func (s *Store) commitLoop(p *part) {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var (
		want     = 1 // appends to wait for
		gather   time.Duration
		deadline time.Time
	)
	for {
		p.qmu.Lock()
		n := len(p.queue)
		if n > 0 && gather > 0 && deadline.IsZero() {
			deadline = time.Now().Add(gather) // from the first append
		}
		if n == 0 || (n < want && time.Now().Before(deadline)) {
			// Sleep until the first append, or while gathering until
			// want have queued or the deadline.
			p.qwant = 1
			if n > 0 {
				p.qwant = want
				timer.Reset(time.Until(deadline))
			}
			p.qmu.Unlock()
			select {
			case <-p.qwake:
			case <-timer.C:
			case <-s.closing:
				p.qmu.Lock()
				p.qclosed = true
				rest := p.queue
				p.queue = nil
				p.qmu.Unlock()
				for _, pd := range rest {
					pd.answer(journal.AppendResult{}, journal.ErrClosed)
				}
				return
			}
			timer.Stop()
			continue
		}
		group := p.queue
		p.queue, p.qwant = nil, 0
		p.qmu.Unlock()
		answered, rtt := 0, time.Duration(0)
		for len(group) > 0 {
			var k int
			var d time.Duration
			group, k, d = s.commitSome(p, group)
			answered, rtt = answered+k, max(rtt, d)
		}
		p.qmu.Lock()
		queued := len(p.queue)
		p.qmu.Unlock()
		want, gather, deadline = 1, 0, time.Time{}
		if n, wait := gatherFor(answered, queued, rtt, time.Duration(s.gather.Load())); wait > 0 {
			want, gather = n, wait
		}
	}
}

// gatherFor is how a committer that just answered a batch of answered
// appends, with queued more waiting, gathers its next batch: once an
// append is queued, it waits for want appends (the writers just answered
// and those waiting: a busy entity, or a client in a loop, appends again
// soon) for at most wait. Only on a busy partition, whose last batch
// carried gatherFrom appends or more: a quarter of a round trip (at most
// max) then lets the writers of both batches share one. A partition with
// fewer appends sends at once. Bigger batches cost the servers much less
// per message, and on busy servers that is the rate, and the latency
// (docs/benchmarks.md, "Chunks and gathering").
func gatherFor(answered, queued int, rtt, max time.Duration) (want int, wait time.Duration) {
	if answered < gatherFrom || max <= 0 {
		return 1, 0
	}
	return min(answered+queued, jsbatch.MaxMessages), min(rtt/4, max)
}

// planned is an append placed in the batch being built.
type planned struct {
	pd  *pending
	res journal.AppendResult
}

// commitSome builds one batch from the front of group, publishes it and
// answers its appends; it returns the appends left for the next batch,
// how many appends landed, and the batch's round trip.
func (s *Store) commitSome(p *part, group []*pending) (left []*pending, landed int, rtt time.Duration) {
	ctx := context.Background() // each request is bounded by Timeout
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := s.writable(p); err != nil {
		for _, pd := range group {
			pd.answer(journal.AppendResult{}, err)
		}
		return nil, 0, 0
	}
	if err := s.settle(ctx, p); err != nil {
		for _, pd := range group {
			pd.answer(journal.AppendResult{}, s.appendErr(p, pd, err))
		}
		return nil, 0, 0
	}
	gen := p.gen.Load()
	var (
		plan    []planned
		msgs    []*nats.Msg
		size    int
		running = map[string]head{} // entity heads with this batch
		keys    = map[idemKey]bool{}
	)
	for i, pd := range group {
		req := &pd.req
		if err := pd.ctx.Err(); err != nil {
			pd.answer(journal.AppendResult{}, err) // not taken: nothing written
			continue
		}
		k := idemKey{req.Stream, req.IdempotencyKey}
		if req.IdempotencyKey != "" {
			if keys[k] {
				// Its twin is in this batch: decide after it lands.
				left = append(left, pd)
				continue
			}
			p.hmu.Lock()
			r, ok := p.idem[k]
			p.hmu.Unlock()
			if !ok && pd.gen != gen && !req.KeyUnused {
				var err error
				if r, ok, err = s.idempotent(ctx, p, req.Stream, req.IdempotencyKey); err != nil {
					pd.answer(journal.AppendResult{}, err)
					continue
				}
			}
			if ok {
				pd.answer(r, nil)
				continue
			}
		}
		h, ok := running[req.Stream]
		if !ok {
			p.hmu.Lock()
			h, ok = p.heads[req.Stream]
			p.hmu.Unlock()
		}
		if !ok && pd.hasHead && pd.gen == gen {
			h, ok = pd.head, true
		}
		if !ok {
			var err error
			if h, err = s.headOf(ctx, p, req.Stream); err != nil {
				pd.answer(journal.AppendResult{}, err)
				continue
			}
		}
		switch {
		case h.tombstoned:
			pd.answer(journal.AppendResult{}, fmt.Errorf("append to %q: %w", req.Stream, journal.ErrTombstoned))
			continue
		case req.Expected != journal.ExpectAny && req.Expected != h.seq:
			pd.answer(journal.AppendResult{}, &journal.ConflictError{Stream: req.Stream, Expected: req.Expected, Actual: h.seq})
			continue
		}
		n := len(req.Events)
		nmsgs, bytes := n, 0
		if req.IdempotencyKey != "" {
			nmsgs++
		}
		for j := range req.Events {
			bytes += eventSize(&req.Events[j])
		}
		if len(plan) > 0 && (len(msgs)+nmsgs > jsbatch.MaxMessages || size+bytes > maxBatchBytes) {
			left = append(left, group[i:]...)
			break
		}
		pos := p.last + uint64(len(msgs))
		res := journal.AppendResult{
			FirstSequence: h.seq + 1, LastSequence: h.seq + uint64(n),
			Partition: p.n, FirstPosition: pos + 1, LastPosition: pos + uint64(n),
		}
		var err error
		mark := len(msgs)
		if msgs, err = s.eventMsgs(p, req, h.seq+1, msgs); err != nil {
			msgs = msgs[:mark]
			pd.answer(journal.AppendResult{}, err)
			continue
		}
		if req.IdempotencyKey != "" {
			b, _ := json.Marshal(idemRecord{res.FirstSequence, res.LastSequence, res.FirstPosition, res.LastPosition, req.Reply})
			msgs = append(msgs, &nats.Msg{Subject: s.idemSubject(p.n, req.Stream, req.IdempotencyKey), Data: b})
			keys[k] = true
			res.Reply = append([]byte(nil), req.Reply...)
		}
		size += bytes
		running[req.Stream] = head{seq: res.LastSequence}
		plan = append(plan, planned{pd, res})
	}
	if len(plan) == 0 {
		return left, 0, 0
	}
	// The batch's identity, for Resolve: unique to this Store and batch,
	// the same on every retry of it.
	p.batches++
	msgs[0].Header.Set(jsbatch.HeaderMsgID, "b."+s.nonce+"."+strconv.Itoa(p.n)+"."+strconv.FormatUint(p.batches, 10))
	start := time.Now()
	ack, err := s.publish(ctx, p, msgs)
	rtt = time.Since(start)
	if err == nil && ack.FirstSeq != plan[0].res.FirstPosition {
		// The fence makes this impossible; say so loudly if it happens.
		err = fmt.Errorf("jsstore: batch landed at %d, expected %d", ack.FirstSeq, plan[0].res.FirstPosition)
	}
	if err != nil {
		for _, pl := range plan {
			pl.pd.answer(journal.AppendResult{}, s.appendErr(p, pl.pd, err))
		}
		return left, 0, 0
	}
	var lastEvent uint64
	p.hmu.Lock()
	if len(p.heads)+len(running) > maxCached || len(p.idem)+len(keys) > maxCached {
		p.resetLocked()
	}
	for stream, h := range running {
		p.heads[stream] = h
	}
	for _, pl := range plan {
		if pl.pd.req.IdempotencyKey != "" {
			r := pl.res
			r.Duplicate = true
			p.idem[idemKey{pl.pd.req.Stream, pl.pd.req.IdempotencyKey}] = r
		}
		lastEvent = max(lastEvent, pl.res.LastPosition)
	}
	p.hmu.Unlock()
	s.cacheBatch(p, plan, ack, len(msgs))
	p.ownBatch.event, p.ownBatch.end = lastEvent, ack.LastSeq
	p.advance(lastEvent)
	for _, pl := range plan {
		pl.pd.answer(pl.res, nil)
	}
	return left, len(plan), rtt
}

// cacheBatch gives the partition's tail cache the events of a batch that
// landed, as a read of the stream would return them, so that this node's
// projections do not read its own appends back. The batch was fenced at
// the position before its first message: nothing else lies within it,
// and when that fence is the end of this Store's previous batch, nothing
// but that batch's own records lies between its last event and this
// batch either (a read of the cache reaches only to the last event).
// Only when the log keeps the events' times, and every event has one:
// otherwise the stored time is the server's, which only a read learns.
// The caller holds p.mu.
func (s *Store) cacheBatch(p *part, plan []planned, ack jsbatch.Ack, msgs int) {
	if !s.cfg.KeepEventTimes || ack.LastSeq != ack.FirstSeq+uint64(msgs)-1 {
		return
	}
	n := 0
	for _, pl := range plan {
		n += len(pl.pd.req.Events)
	}
	evs := make([]journal.Event, 0, n)
	for _, pl := range plan {
		req := &pl.pd.req
		for j := range req.Events {
			e := &req.Events[j]
			if e.Time.IsZero() {
				return
			}
			ev := journal.Event{
				Stream: req.Stream, Sequence: pl.res.FirstSequence + uint64(j), Partition: p.n,
				Position: pl.res.FirstPosition + uint64(j), Time: time.Unix(0, e.Time.UnixNano()).UTC(),
				Type: e.Type, ContentType: e.ContentType, Payload: e.Payload,
			}
			if len(e.Tags) > 0 {
				ev.Tags = slices.Clone(e.Tags)
			}
			if len(e.Metadata) > 0 {
				ev.Metadata = maps.Clone(e.Metadata)
			}
			evs = append(evs, ev)
		}
	}
	after := ack.FirstSeq - 1
	if prev := p.ownBatch; prev.end == after && prev.event != 0 {
		after = prev.event
	}
	p.tail.add(after, evs, ack.LastSeq)
}

// appendErr is what the caller of an append in a failed batch gets.
func (s *Store) appendErr(p *part, pd *pending, err error) error {
	var fe *journal.FencedError
	switch {
	case errors.As(err, &fe):
		return err
	case errors.Is(err, jsbatch.ErrUnknownOutcome):
		return &journal.UnknownOutcomeError{Stream: pd.req.Stream, Partition: p.n, Err: err}
	}
	return fmt.Errorf("append to %q: %w", pd.req.Stream, err)
}
