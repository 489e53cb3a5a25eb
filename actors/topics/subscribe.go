package topics

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// Subscription is one subscriber actor's subscription to a topic pattern.
type Subscription struct {
	t       *Topics
	pid     *actor.PID
	pattern string
	durable bool

	pending atomic.Int64 // messages posted to the actor's mailbox, not yet handled
	dropped atomic.Int64

	mu      sync.Mutex
	sub     *nats.Subscription
	consume jetstream.ConsumeContext
	watcher *actor.PID
	done    bool
}

// PID is the subscriber actor.
func (s *Subscription) PID() *actor.PID { return s.pid }

// Dropped is the number of messages this subscription dropped because its
// actor was MaxPending messages behind (core topics only).
func (s *Subscription) Dropped() int64 { return s.dropped.Load() }

// Spawn starts a subscriber actor from props and subscribes it to pattern
// (a topic, or a wildcard: "orders.*", "orders.>"). The actor receives
// *Message values. The subscription ends when the actor stops, and
// Unsubscribe stops the actor. A pattern inside a declared durable topic
// gets durable delivery and needs opts.Group.
func (t *Topics) Spawn(ctx context.Context, props *actor.Props, pattern string, opts SubscribeOptions) (*Subscription, error) {
	if err := ValidatePattern(pattern); err != nil {
		return nil, err
	}
	d := t.durableFor(pattern)
	if d != nil && opts.Group == "" {
		return nil, fmt.Errorf("topics: %q is durable (topic %q): subscribing needs a group, which names the durable consumer", pattern, d.cfg.Name)
	}
	if opts.Group != "" {
		if err := ValidateTopic(opts.Group); err != nil || len(opts.Group) > 64 {
			return nil, fmt.Errorf("topics: group %q: letters, digits, '-' and '_', at most 64", opts.Group)
		}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	t.mu.Unlock()

	s := &Subscription{t: t, pattern: pattern, durable: d != nil}
	// Our mailbox counts what the actor has not handled yet: that is the
	// bound that keeps a slow subscriber from growing memory.
	props.Configure(actor.WithMailbox(actor.Unbounded(&countingMailbox{s: s})))
	s.pid = t.cfg.System.Root.Spawn(props)
	watching := make(chan struct{})
	s.watcher = t.cfg.System.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *actor.Started:
			c.Watch(s.pid)
			close(watching)
		case *actor.Terminated:
			if m.Who.Equal(s.pid) {
				s.stopDelivery()
				c.Stop(c.Self())
			}
		}
	}))
	// The watch is in place before Spawn returns: an Unsubscribe right
	// after it would otherwise stop the actor first, and the watch would
	// go to the dead letters.
	select {
	case <-watching:
	case <-ctx.Done():
		s.Unsubscribe()
		return nil, fmt.Errorf("topics: subscribe %q: %w", pattern, ctx.Err())
	case <-time.After(10 * time.Second): // the actor system is stopping
		s.Unsubscribe()
		return nil, fmt.Errorf("topics: subscribe %q: the subscriber's watcher did not start in 10 s", pattern)
	}

	var err error
	if d != nil {
		err = s.startDurable(ctx, d, opts.Group)
	} else {
		err = s.startCore(opts.Group)
	}
	if err != nil {
		s.Unsubscribe()
		return nil, err
	}
	t.mu.Lock()
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	return s, nil
}

func (s *Subscription) startCore(group string) error {
	handler := func(m *nats.Msg) {
		if s.pending.Load() >= int64(s.t.cfg.MaxPending) {
			s.dropped.Add(1)
			s.t.m.dropSlow.Inc()
			return
		}
		msg := &Message{Topic: m.Subject, Data: m.Data, Header: headerMap(m.Header), Delivery: 1}
		if !s.intercept(msg) {
			return
		}
		s.post(msg, s.t.m.delCore)
	}
	var sub *nats.Subscription
	var err error
	if group != "" {
		sub, err = s.t.nc.QueueSubscribe(s.pattern, group, handler)
	} else {
		sub, err = s.t.nc.Subscribe(s.pattern, handler)
	}
	if err != nil {
		return fmt.Errorf("topics: subscribe %q: %w", s.pattern, err)
	}
	// Our own bound (MaxPending) drops before NATS's does; keep NATS's
	// generous so that its slow-consumer path is only a last resort.
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	if err := s.t.nc.Flush(); err != nil {
		sub.Unsubscribe()
		return err
	}
	s.mu.Lock()
	s.sub = sub
	s.mu.Unlock()
	return nil
}

func (s *Subscription) startDurable(ctx context.Context, d *durableTopic, group string) error {
	cons, err := s.t.js.CreateOrUpdateConsumer(ctx, streamName(d.cfg.Name), jetstream.ConsumerConfig{
		Durable:       group,
		FilterSubject: s.pattern,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.cfg.AckWait,
		// MaxDeliver is enforced by us (dead-lettering on the last
		// attempt), so the server must not give up first.
		MaxDeliver:    -1,
		MaxAckPending: d.cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("topics: consumer %q on %q: %w", group, d.cfg.Name, err)
	}
	cc, err := cons.Consume(func(jm jetstream.Msg) {
		meta, err := jm.Metadata()
		if err != nil {
			_ = jm.Term()
			return
		}
		msg := &Message{Topic: jm.Subject(), Data: jm.Data(), Header: headerMap(jm.Headers()),
			Delivery: meta.NumDelivered, Durable: true}
		msg.ack = func(herr error) { s.settle(d, jm, msg, herr) }
		if !s.intercept(msg) {
			_ = jm.TermWithReason("rejected by a plugin")
			return
		}
		s.post(msg, s.t.m.delDurable)
	}, jetstream.PullMaxMessages(min(d.cfg.MaxAckPending, 256)))
	if err != nil {
		return fmt.Errorf("topics: consume %q: %w", group, err)
	}
	s.mu.Lock()
	s.consume = cc
	s.mu.Unlock()
	return nil
}

// settle acks, naks (with back-off) or dead-letters a durable message.
func (s *Subscription) settle(d *durableTopic, jm jetstream.Msg, msg *Message, herr error) {
	if herr == nil {
		_ = jm.Ack()
		return
	}
	if msg.Delivery < uint64(d.cfg.MaxDeliver) {
		i := min(int(msg.Delivery)-1, len(d.cfg.Backoff)-1)
		_ = jm.NakWithDelay(d.cfg.Backoff[i])
		return
	}
	dl := nats.NewMsg(d.cfg.DeadLetter)
	dl.Data = msg.Data
	for k, v := range msg.Header {
		dl.Header.Set(k, v)
	}
	dl.Header.Set("Troupe-Topic", msg.Topic)
	dl.Header.Set("Troupe-Error", herr.Error())
	dl.Header.Set("Troupe-Deliveries", strconv.FormatUint(msg.Delivery, 10))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if s.t.durableFor(d.cfg.DeadLetter) != nil {
		_, err = s.t.js.PublishMsg(ctx, dl)
	} else {
		err = s.t.nc.PublishMsg(dl)
	}
	if err != nil {
		// Could not dead-letter: leave it for another attempt.
		s.t.log.Error("dead-lettering failed", "topic", msg.Topic, "err", err)
		_ = jm.NakWithDelay(d.cfg.Backoff[len(d.cfg.Backoff)-1])
		return
	}
	s.t.m.deadLetters.Inc()
	s.t.log.Warn("message dead-lettered", "topic", msg.Topic, "dead_letter", d.cfg.DeadLetter, "deliveries", msg.Delivery, "err", herr)
	_ = jm.TermWithReason("dead-lettered: " + herr.Error())
}

// intercept runs the sidecar chain; false means the message was rejected.
func (s *Subscription) intercept(msg *Message) bool {
	if s.t.cfg.Intercept == nil {
		return true
	}
	tm := &troupev1.TopicMessage{Topic: msg.Topic, Payload: msg.Data, Metadata: msg.Header, ContentType: msg.Header["Content-Type"]}
	if err := s.t.cfg.Intercept(context.Background(), tm); err != nil {
		s.t.m.dropRejected.Inc()
		s.t.log.Info("topic message rejected", "topic", msg.Topic, "err", err)
		return false
	}
	msg.Data, msg.Header = tm.GetPayload(), tm.GetMetadata()
	return true
}

func (s *Subscription) post(msg *Message, delivered prometheus.Counter) {
	s.pending.Add(1)
	s.t.cfg.System.Root.Send(s.pid, msg)
	delivered.Inc()
}

// Unsubscribe stops delivery and stops the subscriber actor. Idempotent.
func (s *Subscription) Unsubscribe() {
	s.stopDelivery()
	if s.pid != nil {
		s.t.cfg.System.Root.Stop(s.pid)
	}
}

func (s *Subscription) stopDelivery() {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	sub, cc := s.sub, s.consume
	s.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	if cc != nil {
		cc.Stop()
		<-cc.Closed()
	}
	// The watcher stops itself when the actor's Terminated reaches it:
	// stopped first, it would leave that Terminated to the dead letters.
	s.t.mu.Lock()
	delete(s.t.subs, s)
	s.t.mu.Unlock()
}

// countingMailbox tracks how many topic messages the subscriber has not
// handled yet.
type countingMailbox struct{ s *Subscription }

func (c *countingMailbox) MailboxStarted()   {}
func (c *countingMailbox) MessagePosted(any) {}
func (c *countingMailbox) MailboxEmpty()     {}
func (c *countingMailbox) MessageReceived(msg any) {
	if _, ok := msg.(*Message); ok {
		c.s.pending.Add(-1)
	}
}

func headerMap(h nats.Header) map[string]string {
	if len(h) == 0 {
		return nil
	}
	m := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			m[k] = v[0]
		}
	}
	return m
}
