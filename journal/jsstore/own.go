package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/troupe-dev/troupe/journal"
	"github.com/troupe-dev/troupe/journal/jsstore/internal/jsbatch"
)

// Headers of a takeover marker.
const (
	hdrEpoch  = "Troupe-Epoch"  // the new owner's lease epoch
	hdrHolder = "Troupe-Holder" // the new owner's name (its node id)
)

// acquireAttempts bounds how often Acquire re-reads and retries when the
// stream's fence moves under it (a tail write of the previous owner may
// still land, or another acquirer's marker).
const acquireAttempts = 8

// acquireStaleReads bounds the re-reads that wait for a write the leader
// has accepted to be applied (5 ms more each time, at most 100 ms: about
// 9 s in all).
const acquireStaleReads = 100

// Fence is a partition this Store owns: the epoch it acquired it under
// and the stream sequence of its takeover marker.
type Fence struct {
	Partition int
	Epoch     uint64
	// Sequence is the takeover marker's sequence in the partition's
	// stream: every write of this owner comes after it.
	Sequence uint64
	// Holder is the name Acquire was given.
	Holder string
}

// ownership of a partition, under part.mu.
type ownership struct {
	owned bool
	fence Fence
	// lost is set when a write found the fence moved while owned; it is
	// every later write's error until Acquire or Release.
	lost *journal.FencedError
}

// writable says whether this Store may write to p now. The caller holds
// p.mu.
func (s *Store) writable(p *part) error {
	switch {
	case p.own.lost != nil:
		e := *p.own.lost
		return &e
	case p.own.owned:
		return nil
	case s.cfg.RequireOwnership:
		return &journal.NotOwnerError{Partition: p.n}
	}
	return nil
}

// marker is a takeover marker as read from the stream.
type marker struct {
	seq    uint64
	epoch  uint64
	holder string
	id     string
}

func markerID(partition int, epoch uint64) string {
	return "f." + strconv.Itoa(partition) + "." + strconv.FormatUint(epoch, 10)
}

// lastMarker reads the partition's last takeover marker from the stream's
// leader (nil: none).
func (s *Store) lastMarker(ctx context.Context, p *part) (*marker, error) {
	m, err := s.lastMsg(ctx, p, s.subject(p.n, "f"))
	if err != nil || m == nil {
		return nil, err
	}
	epoch, err := strconv.ParseUint(m.Header.Get(hdrEpoch), 10, 64)
	if err != nil {
		return nil, corrupt("(partition "+strconv.Itoa(p.n)+" takeover marker)", 0, m.Sequence, fmt.Errorf("header %s %q", hdrEpoch, m.Header.Get(hdrEpoch)))
	}
	return &marker{seq: m.Sequence, epoch: epoch, holder: m.Header.Get(hdrHolder), id: m.Header.Get(jsbatch.HeaderMsgID)}, nil
}

// Acquire makes this Store the writer of a partition, under a lease epoch
// the caller won (the cluster's shard lease) and the holder's name (the
// node id). It reads the stream's last sequence from its leader and
// appends a takeover marker fenced by it, so that from then on the
// previous owner's writes fail (its fence is behind), and resets what
// this Store knew of the partition's entities, so that the next appends
// read their heads from the leader. Acquire waits for a write of this
// Store in flight on the partition.
//
// It fails with *journal.FencedError if the stream's last marker has a
// higher epoch (or the same epoch and another holder): the lease moved on.
// When the fence keeps moving (another writer still appending) it retries
// a bounded number of times, then fails. A reply that does not come is
// not a failure: Acquire re-reads, and if its marker is there, it owns
// the partition. Acquiring again with the same epoch and holder (after an
// error, or to re-sync) is safe: the marker is not written twice.
func (s *Store) Acquire(ctx context.Context, partition int, epoch uint64, holder string) (Fence, error) {
	p, err := s.partition(partition)
	if err != nil {
		return Fence{}, err
	}
	switch {
	case epoch == 0:
		return Fence{}, fmt.Errorf("%w: acquire partition %d: epoch 0", journal.ErrInvalid, partition)
	case holder == "" || len(holder) > 256 || strings.ContainsAny(holder, "\r\n\x00"):
		return Fence{}, fmt.Errorf("%w: acquire partition %d: holder %q: want 1 to 256 bytes, no CR, LF or NUL", journal.ErrInvalid, partition, holder)
	}
	if err := s.check(); err != nil {
		return Fence{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := s.acquire(ctx, p, epoch, holder)
	if err != nil {
		return Fence{}, fmt.Errorf("jsstore: acquire partition %d (%s) at epoch %d: %w", partition, p.name, epoch, err)
	}
	if s.cfg.LeadLocallyAfter > 0 {
		s.leadLater(p, f)
	}
	s.log.Info("partition acquired", "shard", partition, "stream", p.name, "epoch", epoch, "holder", holder, "marker", f.Sequence)
	return f, nil
}

func (s *Store) acquire(ctx context.Context, p *part, epoch uint64, holder string) (Fence, error) {
	id := markerID(p.n, epoch)
	var (
		lastErr error
		ahead   uint64 // the sequence a conflict said the leader is at
		stale   int    // re-reads that had not caught up with it
	)
	for attempt := 0; attempt < acquireAttempts; {
		last, mk, err := s.readFence(ctx, p, lastErr)
		if err != nil {
			return Fence{}, errors.Join(err, lastErr)
		}
		if last < ahead && stale < acquireStaleReads {
			// A clustered stream's leader checks the fence against its
			// proposals, while its info and reads show what is applied:
			// wait for the write that moved the fence to be applied, so
			// that its marker is read, rather than spend an attempt.
			stale++
			if err := pause(ctx, min(time.Duration(stale)*5*time.Millisecond, 100*time.Millisecond)); err != nil {
				return Fence{}, errors.Join(err, lastErr)
			}
			continue
		}
		attempt++
		if mk != nil && (mk.epoch > epoch || mk.epoch == epoch && (mk.holder != holder || mk.id != id)) {
			return Fence{}, &journal.FencedError{Partition: p.n, Epoch: epoch, By: mk.holder, ByEpoch: mk.epoch}
		}
		if mk != nil && mk.epoch == epoch {
			// Ours already: an earlier attempt landed.
			return s.adopt(p, Fence{Partition: p.n, Epoch: epoch, Sequence: mk.seq, Holder: holder}, last), nil
		}
		if err := ctx.Err(); err != nil {
			return Fence{}, errors.Join(err, lastErr)
		}
		m := nats.NewMsg(s.subject(p.n, "f"))
		m.Header.Set(jsbatch.HeaderMsgID, id)
		m.Header.Set(hdrEpoch, strconv.FormatUint(epoch, 10))
		m.Header.Set(hdrHolder, holder)
		ack, err := s.pub.Publish(ctx, p.name, last, []*nats.Msg{m})
		var ce *jsbatch.ConflictError
		switch {
		case err == nil:
			return s.adopt(p, Fence{Partition: p.n, Epoch: epoch, Sequence: ack.FirstSeq, Holder: holder}, ack.LastSeq), nil
		case errors.As(err, &ce), errors.Is(err, jsbatch.ErrInFlight), errors.Is(err, jsbatch.ErrDuplicate),
			errors.Is(err, jsbatch.ErrUnknownOutcome), errors.Is(err, jsbatch.ErrIncomplete):
			// The fence moved, or the outcome is unknown: re-read, decide.
			s.log.Debug("takeover marker not confirmed; re-reading", "shard", p.n, "stream", p.name, "err", err)
			lastErr = err
			if ce != nil && ce.ActualKnown {
				ahead = ce.Actual
			}
		default:
			return Fence{}, err
		}
	}
	return Fence{}, fmt.Errorf("the stream's fence kept moving (%d attempts): %w", acquireAttempts, lastErr)
}

// readFence reads the stream's last sequence and last takeover marker
// from its leader. After an unknown outcome (prev) it reads even if ctx
// has ended, bounded by Timeout: a reply that did not come is no failure.
func (s *Store) readFence(ctx context.Context, p *part, prev error) (uint64, *marker, error) {
	if ctx.Err() != nil && errors.Is(prev, jsbatch.ErrUnknownOutcome) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
		defer cancel()
	}
	// Right after a crash the stream may have no leader, and a request to
	// it goes unanswered until its timeout even if a leader is elected
	// meanwhile: ask again every fenceReadWait, within Config.Timeout, so
	// that the takeover goes on as soon as the election ends.
	start := time.Now()
	var last uint64
	for {
		rctx, cancel := context.WithTimeout(ctx, fenceReadWait)
		var err error
		last, err = s.pub.LastSequence(rctx, p.name)
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, jsbatch.ErrUnavailable) || ctx.Err() != nil || time.Since(start) >= s.cfg.Timeout {
			return 0, nil, err
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return 0, nil, errors.Join(err, prev)
		}
	}
	mk, err := s.lastMarker(ctx, p)
	return last, mk, err
}

// fenceReadWait bounds one request for a stream's last sequence when
// acquiring it (readFence asks again until Config.Timeout).
const fenceReadWait = 750 * time.Millisecond

// adopt makes p owned under f, with the stream's last sequence last. The
// caller holds p.mu.
func (s *Store) adopt(p *part, f Fence, last uint64) Fence {
	s.stopWatch(p) // the only writer now: its appends advance the position
	// The previous owner's last events may not have reached the watcher:
	// read the partition's last event from the leader.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	if m, err := s.lastMsg(ctx, p, s.subject(p.n, "e.>")); err != nil {
		s.log.Warn("partition's last event not read after acquiring it", "stream", p.name, "err", err)
	} else if m != nil {
		p.advance(m.Sequence)
	}
	cancel()
	p.own = ownership{owned: true, fence: f}
	p.held.Store(&f)
	p.mayWrite.Store(true)
	p.last = last
	p.unresolved = nil // a batch of an earlier ownership: fenced by the marker
	p.resetCache()
	return f
}

// Release stops this Store writing to a partition: later writes fail with
// *journal.NotOwnerError if Config.RequireOwnership is set (else they are
// written unfenced by ownership, as by a store that never acquired). It
// waits for a write in flight on the partition to finish. It forgets a
// lost ownership too. An unknown partition is ignored.
func (s *Store) Release(partition int) {
	p, err := s.partition(partition)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.own.owned {
		s.log.Info("partition released", "shard", partition, "stream", p.name, "epoch", p.own.fence.Epoch)
	}
	p.own = ownership{}
	p.held.Store(nil)
	p.mayWrite.Store(!s.cfg.RequireOwnership)
	p.resetCache()
	s.rewatch(p)
}

// Owned reports whether this Store owns a partition, and its fence.
func (s *Store) Owned(partition int) (Fence, bool) {
	p, err := s.partition(partition)
	if err != nil {
		return Fence{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.own.fence, p.own.owned
}

// Holds is Owned without waiting for a write in flight on the partition
// (Owned takes the partition's write lock, which a batch holds for its
// round trip): the fence this Store holds the partition under now, as
// Acquire, Release and the loss of the partition last left it. A reader
// that must know whether it still owns a partition (the node's local
// copy, journal/jsstore/ownedcopy) asks on every read.
func (s *Store) Holds(partition int) (Fence, bool) {
	p, err := s.partition(partition)
	if err != nil {
		return Fence{}, false
	}
	if f := p.held.Load(); f != nil {
		return *f, true
	}
	return Fence{}, false
}

// fenced handles a write that found the stream's fence moved while p was
// owned: p is lost at once (never refreshed to carry on: that is the
// zombie writer), Config.OnFenced runs, and the returned error is the
// write's. The caller holds p.mu.
func (s *Store) fenced(ctx context.Context, p *part, cause error) error {
	fe := &journal.FencedError{Partition: p.n, Epoch: p.own.fence.Epoch}
	// Name the new owner if its marker can be read; bounded, and even if
	// the caller's ctx has ended.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(s.cfg.Timeout, 2*time.Second))
	if mk, err := s.lastMarker(rctx, p); err == nil && mk != nil && mk.epoch > fe.Epoch {
		fe.By, fe.ByEpoch = mk.holder, mk.epoch
	}
	cancel()
	s.log.Warn("partition fenced: another owner took it over", "shard", p.n, "stream", p.name,
		"epoch", fe.Epoch, "by", fe.By, "by_epoch", fe.ByEpoch, "err", cause)
	p.own = ownership{lost: fe}
	p.held.Store(nil)
	p.mayWrite.Store(false)
	p.unresolved = nil
	p.resetCache()
	s.rewatch(p)
	if f := s.cfg.OnFenced; f != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			f(p.n)
		}()
	}
	e := *fe
	return &e
}

// fenceErr says whether err means that the stream's fence moved: another
// writer appended.
func fenceErr(err error) bool {
	var ce *jsbatch.ConflictError
	return errors.As(err, &ce)
}

// pause waits for d, or until ctx is done, and returns ctx's error then.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leadLater runs leadHere after Config.LeadLocallyAfter if p is still
// owned under f then, on a goroutine of the Store's. The caller holds p.mu.
func (s *Store) leadLater(p *part, f Fence) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if pause(s.life, s.cfg.LeadLocallyAfter) != nil {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.own.owned || p.own.fence != f {
			return
		}
		s.leadHere(s.life, p)
	}()
}

// leadHere moves the leadership of p's stream to the server this Store is
// connected to, if another server leads it (Config.LeadLocallyAfter), and waits
// until that server leads, within leadHereWait. It only logs what fails:
// the partition is served wherever its leader is. The caller holds p.mu,
// so the partition's writes wait for the move instead of meeting a stream
// without a leader.
func (s *Store) leadHere(ctx context.Context, p *part) {
	me := s.cfg.Conn.ConnectedServerName()
	if me == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, leadHereWait)
	defer cancel()
	// current: whether this server's replica has everything the leader
	// has. A transfer to a replica that lags can fail, and then leaves
	// the stream without a leader until an election (2-4 s): worse than
	// an owner whose leader is across a route.
	current := false
	leader := func() string {
		info, err := s.js.Stream(ctx, p.name)
		if err != nil {
			return ""
		}
		ci := info.CachedInfo().Cluster
		if ci == nil {
			return me // not clustered: nothing to move
		}
		for _, r := range ci.Replicas {
			if r.Name == me {
				current = r.Current && r.Lag == 0 && !r.Offline
			}
		}
		return ci.Leader
	}
	was := leader()
	if was == me || was == "" {
		return
	}
	if !current {
		s.log.Debug("stream leadership not moved here: this replica is not current", "stream", p.name, "leader", was)
		return
	}
	start := time.Now()
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": me}})
	resp, err := s.cfg.Conn.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+p.name, req)
	if err == nil {
		var r struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if jerr := json.Unmarshal(resp.Data, &r); jerr != nil {
			err = jerr
		} else if r.Error != nil {
			err = errors.New(r.Error.Description)
		}
	}
	if err != nil {
		s.log.Debug("stream leadership not moved here", "stream", p.name, "leader", was, "err", err)
		return
	}
	for {
		if l := leader(); l == me {
			s.log.Debug("stream leadership moved here", "stream", p.name, "from", was, "took", time.Since(start).Round(time.Millisecond))
			return
		}
		if pause(ctx, 20*time.Millisecond) != nil {
			s.log.Info("stream leadership not here yet; serving anyway", "stream", p.name, "was", was, "waited", time.Since(start).Round(time.Millisecond))
			return
		}
	}
}

// leadHereWait bounds leadHere.
const leadHereWait = time.Second
