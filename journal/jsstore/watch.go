package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// watch starts p's watcher: an ordered consumer of the partition's event
// subjects, headers only, from the stream's sequence at open, so that
// LastPosition and WaitPosition follow the appends of every Store (every
// node), not only this one's. The server delivers a message once it is
// stored at the stream's leader, so a read from the leader after a wake-up
// finds it (read-your-writes across nodes).
//
// Why a consumer and not a core subscription on the event subjects: a
// subscriber also receives messages of batches that the stream refuses
// (a zombie's, a conflicting one), and payloads it does not need; each
// hint would need a confirming request. The consumer delivers committed
// events only, in order, without payloads. Its goroutines are nats.go's
// (one subscription and its reset loop), stopped by Close.
func (s *Store) watch(ctx context.Context, p *part) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	defer cancel()
	cons, err := p.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.subject(p.n, "e.>")},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    p.last + 1,
		HeadersOnly:    true,
		// The consumer lives in the stream leader's memory; if Close
		// cannot delete it (no leader then), the server does after this.
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("jsstore: watch %s: %w", p.name, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		p.advance(md.Sequence.Stream)
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

// unwatch stops every partition's watcher, waits for its goroutines
// (bounded), and deletes its consumer, best effort and bounded: a consumer
// left behind is removed by the server after its InactiveThreshold.
func (s *Store) unwatch() {
	for _, p := range s.parts {
		if p.watcher != nil {
			p.watcher.Stop()
		}
	}
	deadline := time.After(5 * time.Second)
	for _, p := range s.parts {
		if p.watcher == nil {
			continue
		}
		select {
		case <-p.watcher.Closed():
		case <-deadline:
			s.log.Warn("partition watcher did not stop in time", "stream", p.name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, p := range s.parts {
		if p.watcher == nil || ctx.Err() != nil {
			continue
		}
		if err := s.js.DeleteConsumer(ctx, p.name, p.wname); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.log.Debug("delete the partition watcher's consumer", "stream", p.name, "err", err)
		}
	}
}
