package jsstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// watch starts p's watcher, from stream sequence from: an ordered
// consumer of the partition's event subjects, so that LastPosition and
// WaitPosition follow the appends of other Stores (other nodes), and so
// that the tail cache gets each new event as it is delivered. The server
// delivers a message once it is stored at the stream's leader, so a read
// from the leader after a wake-up finds it (read-your-writes across
// nodes). A partition this Store owns is not watched: it is the only
// writer, and its own appends advance the position (watching them back
// cost 40-60 % of append throughput).
//
// Why a consumer and not a core subscription on the event subjects: a
// subscriber also receives messages of batches that the stream refuses
// (a zombie's, a conflicting one); each would need a confirming request.
// The consumer delivers committed events only, in order, with no gap
// (nats.go's ordered consumer starts again after the last message it
// delivered when it sees one). So each event it delivers is the next
// event after the one it delivered before, which is what lets the tail
// take it without a read (tail.push); the events used
// to come headers only, and every node's projections then read each one
// back from the leader, one more request per event and node. Its
// goroutines are nats.go's (one subscription and its reset loop),
// stopped by stopWatch and Close. The caller holds p.mu, or owns p alone
// (Open).
func (s *Store) watch(ctx context.Context, p *part, from uint64) error {
	if p.watcher != nil || s.closed.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	defer cancel()
	cons, err := p.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.subject(p.n, "e.>")},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    max(from, 1),
		// The consumer lives in the stream leader's memory; if it cannot
		// be deleted (no leader then), the server does after this.
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("jsstore: watch %s: %w", p.name, err)
	}
	// The last delivery: consumer (nats.go makes a new one on every
	// reset), its delivery sequence, and the message's stream sequence.
	// An event follows the one before with no event between when it is
	// the same consumer's next delivery (no acks, so no redeliveries); the
	// first delivery of each consumer is not taken (readers fill the
	// cache), since a late callback of a replaced consumer may come
	// between (nats.go calls each consumer's handler on its own
	// subscription), and the new consumer's start is not in its messages.
	var (
		mu         sync.Mutex
		consumer   string
		dseq, sseq uint64
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		seq := md.Sequence.Stream
		mu.Lock()
		if md.Consumer == consumer && md.Sequence.Consumer == dseq+1 {
			ev, err := s.decodeEvent(p.n, &jetstream.RawStreamMsg{
				Subject: m.Subject(), Sequence: seq, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp,
			})
			if err == nil {
				// An event that does not decode stays out of the cache:
				// a read then gets it from the stream, and its error.
				p.tail.push(sseq, ev)
			}
		}
		consumer, dseq, sseq = md.Consumer, md.Sequence.Consumer, seq
		mu.Unlock()
		p.advance(seq)
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		s.log.Debug("partition watcher", "stream", p.name, "err", err)
	}))
	if err != nil {
		return fmt.Errorf("jsstore: watch %s: %w", p.name, err)
	}
	p.watcher = cc
	p.wname = cons.CachedInfo().Name
	return nil
}

// rewatch starts p's watcher after this Store stopped owning p, on a
// goroutine of the Store's (Close waits for it), so that a Release or a
// fencing never waits for JetStream: it tries until the watcher runs, p is
// owned again, or the Store closes, with back-off, logging the first
// failure. The caller holds p.mu.
func (s *Store) rewatch(p *part) {
	if p.watcher != nil || s.closed.Load() {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		logged := false
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			p.mu.Lock()
			if p.own.owned || p.watcher != nil || s.closed.Load() {
				p.mu.Unlock()
				return
			}
			ctx, cancel := context.WithTimeout(s.life, s.cfg.Timeout)
			err := s.watch(ctx, p, p.last+1)
			cancel()
			p.mu.Unlock()
			if err == nil {
				return
			}
			if s.closed.Load() {
				return // Close cancelled it
			}
			if !logged {
				s.log.Warn("partition watcher not restarted yet; retrying (until then other writers' appends do not wake WaitPosition)", "stream", p.name, "err", err)
				logged = true
			}
			select {
			case <-s.closing:
				return
			case <-time.After(wait):
			}
		}
	}()
}

// stopWatch detaches p's watcher and stops it on a goroutine of its own,
// and returns a channel closed once it has stopped and its consumer is
// deleted (best effort and bounded: a consumer left behind is removed by
// the server after its InactiveThreshold). Stopping can wait: nats.go's
// ordered consumer holds its lock while it retries a reset, which it does
// for as long as JetStream has no quorum (every node stopping at once);
// the stop then completes when the connection closes. So nobody holding
// p.mu waits for it. The caller holds p.mu, or owns p alone.
func (s *Store) stopWatch(p *part) <-chan struct{} {
	done := make(chan struct{})
	cc, name := p.watcher, p.wname
	if cc == nil {
		close(done)
		return done
	}
	p.watcher, p.wname = nil, ""
	go func() {
		defer close(done)
		cc.Stop()
		select {
		case <-cc.Closed():
		case <-time.After(5 * time.Second):
			s.log.Warn("partition watcher did not stop in time", "stream", p.name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.js.DeleteConsumer(ctx, p.name, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.log.Debug("delete the partition watcher's consumer", "stream", p.name, "err", err)
		}
	}()
	return done
}

// unwatch stops every partition's watcher at once (Close), and waits for
// them up to unwatchWait in all; the ones still stopping then (JetStream
// not answering: a node that has left the cluster has lost its routes)
// end when the connection closes, and their consumers are removed by the
// server after their InactiveThreshold.
func (s *Store) unwatch() {
	var dones []<-chan struct{}
	for _, p := range s.parts {
		p.mu.Lock()
		dones = append(dones, s.stopWatch(p))
		p.mu.Unlock()
	}
	deadline := time.NewTimer(unwatchWait)
	defer deadline.Stop()
	for _, d := range dones {
		select {
		case <-d:
		case <-deadline.C:
			s.log.Info("partition watchers still stopping (JetStream is not answering); they end when the connection closes")
			return
		}
	}
}

// unwatchWait bounds how long Close waits for the watchers to stop: long
// enough for a cluster that answers (tens of milliseconds), short enough
// not to hold up a node's shutdown when it does not.
const unwatchWait = 500 * time.Millisecond
