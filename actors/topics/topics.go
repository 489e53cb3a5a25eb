// Package topics is publish/subscribe for actors over the node's embedded
// NATS server. Publishers send to a topic (a NATS subject such as
// "orders.created") without knowing the subscribers; an actor subscribes to
// a topic or a wildcard ("orders.*", "orders.>") and receives *Message
// values in its mailbox. A subscription ends with its actor.
//
// Each topic has one of two delivery guarantees:
//
//   - core (the default): at most once, straight through NATS. A subscriber
//     that falls MaxPending messages behind loses the newest ones; drops are
//     counted in troupe_topic_dropped_total.
//   - durable (declared with Declare): at least once, through a JetStream
//     stream and a durable consumer. The subscriber acks each message (or
//     naks it); unacked messages are redelivered with back-off, and after
//     MaxDeliver attempts a message goes to the topic's dead-letter topic.
//     Subscribers that share a group share the messages (consumer groups),
//     and a subscriber that was down receives what it missed. Outstanding
//     unacked messages are bounded, which pushes back on the stream instead
//     of growing memory.
//
// Every delivery passes through the sidecar plugin chain (Config.Intercept)
// before it reaches the actor.
//
//	t, _ := topics.New(topics.Config{Conn: nc, System: sys})
//	t.Declare(ctx, topics.Durable{Name: "orders", Subjects: []string{"orders.>"}})
//	t.Subscribe(ctx, pid, "orders.>", topics.SubscribeOptions{Group: "billing"})
//	t.Publish(ctx, "orders.created", []byte(`{"id":1}`), nil)
package topics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("topics: closed")
	// ErrInvalidTopic wraps errors about malformed topic names.
	ErrInvalidTopic = errors.New("topics: invalid topic")
)

// TooLargeError is a message over the server's maximum payload.
type TooLargeError struct {
	Topic       string
	Size, Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("topics: message to %q is %d bytes, over the maximum payload of %d", e.Topic, e.Size, e.Limit)
}

// Message is what a subscriber actor receives.
type Message struct {
	// Topic is the subject the message was published to.
	Topic string
	// Data is the payload.
	Data []byte
	// Header holds the message's headers (plugins may have added some).
	Header map[string]string
	// Delivery is the delivery attempt, from 1 (always 1 on core topics).
	Delivery uint64
	// Durable reports a message of a durable topic, which must be acked.
	Durable bool

	acked atomic.Bool
	ack   func(err error)
}

// Ack confirms a durable message was handled. No-op on core topics.
func (m *Message) Ack() { m.done(nil) }

// Nak reports that handling failed: the message is redelivered after a
// back-off, or dead-lettered after MaxDeliver attempts. No-op on core topics.
func (m *Message) Nak(err error) {
	if err == nil {
		err = errors.New("nak")
	}
	m.done(err)
}

func (m *Message) done(err error) {
	if m.ack != nil && m.acked.CompareAndSwap(false, true) {
		m.ack(err)
	}
}

// Config configures Topics.
type Config struct {
	// Conn is the node's in-process NATS connection. Required.
	Conn *nats.Conn
	// System is the actor system of the subscribers. Required.
	System *actor.ActorSystem
	// Intercept runs the sidecar chain on each delivery; a returned
	// error drops (core) or terminates (durable) the message. It is called
	// concurrently and must be safe for that.
	Intercept func(ctx context.Context, msg *troupev1.TopicMessage) error
	// MaxPending bounds the messages waiting in one core subscriber's
	// mailbox; beyond it new messages are dropped and counted. Default 4096.
	MaxPending int
	// Logger; default discards.
	Logger *slog.Logger
	// Metrics, when set, receives the topic metrics.
	Metrics prometheus.Registerer
}

// Durable declares a durable topic.
type Durable struct {
	// Name names the JetStream stream (TROUPE_<Name>). Letters, digits,
	// '-' and '_'.
	Name string
	// Subjects are the topics (wildcards allowed) the stream keeps.
	Subjects []string
	// MaxDeliver is how many times a message is delivered before it goes
	// to the dead-letter topic. Default 5.
	MaxDeliver int
	// Backoff is the delay before each redelivery after a Nak (the last
	// value repeats). Default 100ms, 1s, 5s.
	Backoff []time.Duration
	// AckWait is how long a delivery may stay unacked before it is
	// redelivered. Default 30s.
	AckWait time.Duration
	// MaxAckPending bounds unacked messages per consumer group: the
	// stream stops delivering to the group beyond it (back-pressure).
	// Default 1024.
	MaxAckPending int
	// DeadLetter is the topic dead letters go to. Default
	// "troupe.dlq.<Name>".
	DeadLetter string
	// MaxAge drops stored messages older than this (0: keep).
	MaxAge time.Duration
}

// SubscribeOptions configures one subscription.
type SubscribeOptions struct {
	// Group shares the topic's messages among the subscribers with the
	// same group name: each message goes to one of them. On a durable
	// topic the group is also the durable consumer's name, which remembers
	// what the group has acked across restarts. Required for durable
	// topics; optional for core topics.
	Group string
}

// Topics publishes and subscribes. Its methods are safe for concurrent use.
type Topics struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	m   metrics

	mu      sync.Mutex
	durable map[string]*durableTopic // by stream name
	subs    map[*Subscription]struct{}
	closed  bool

	// covers caches durableFor by topic; reset by Declare. ndurable lets
	// Publish skip the lookup while no durable topic exists.
	covers   sync.Map // string -> *durableTopic (nil: core)
	ndurable atomic.Int32
}

type durableTopic struct {
	cfg    Durable
	stream jetstream.Stream
}

// New validates cfg and returns Topics.
func New(cfg Config) (*Topics, error) {
	if cfg.Conn == nil || cfg.System == nil {
		return nil, errors.New("topics: Config.Conn and Config.System are required")
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 4096
	}
	if cfg.MaxPending < 0 {
		return nil, fmt.Errorf("topics: negative MaxPending %d", cfg.MaxPending)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("topics: %w", err)
	}
	t := &Topics{cfg: cfg, nc: cfg.Conn, js: js, log: cfg.Logger, m: newMetrics(cfg.Metrics),
		durable: map[string]*durableTopic{}, subs: map[*Subscription]struct{}{}}
	return t, nil
}

// ValidateTopic checks a topic name for publishing: dot-separated tokens,
// none empty, no wildcards, no whitespace.
func ValidateTopic(topic string) error { return validate(topic, false) }

// ValidatePattern checks a subscription pattern: like a topic, but '*' may
// stand for one token and a final '>' for the rest.
func ValidatePattern(pattern string) error { return validate(pattern, true) }

func validate(s string, wildcards bool) error {
	if s == "" {
		return fmt.Errorf("%w: empty topic", ErrInvalidTopic)
	}
	if len(s) > 512 {
		return fmt.Errorf("%w: topic of %d bytes is over 512", ErrInvalidTopic, len(s))
	}
	// One pass, no allocation: this runs on every publish.
	for start := 0; start <= len(s); {
		end := strings.IndexByte(s[start:], '.')
		if end < 0 {
			end = len(s)
		} else {
			end += start
		}
		tok := s[start:end]
		last := end == len(s)
		switch {
		case tok == "":
			return fmt.Errorf("%w: %q has an empty token (leading, trailing or double '.')", ErrInvalidTopic, s)
		case strings.ContainsAny(tok, " \t\r\n\x00"):
			return fmt.Errorf("%w: %q contains whitespace or a NUL byte", ErrInvalidTopic, s)
		case tok == "*" || tok == ">":
			if !wildcards {
				return fmt.Errorf("%w: %q: wildcards are for subscriptions, not for publishing", ErrInvalidTopic, s)
			}
			if tok == ">" && !last {
				return fmt.Errorf("%w: %q: '>' must be the last token", ErrInvalidTopic, s)
			}
		case strings.ContainsAny(tok, "*>"):
			return fmt.Errorf("%w: %q: '*' and '>' must be whole tokens", ErrInvalidTopic, s)
		}
		start = end + 1
	}
	return nil
}

// Declare creates (or updates) a durable topic. Publishing to its subjects,
// from Troupe or from any NATS client, stores the message.
func (t *Topics) Declare(ctx context.Context, d Durable) error {
	if d.Name == "" || strings.ContainsAny(d.Name, ". *>\t\n") {
		return fmt.Errorf("topics: durable topic name %q: want letters, digits, '-' or '_'", d.Name)
	}
	if len(d.Subjects) == 0 {
		return fmt.Errorf("topics: durable topic %q has no subjects", d.Name)
	}
	for _, s := range d.Subjects {
		if err := ValidatePattern(s); err != nil {
			return err
		}
	}
	if d.MaxDeliver == 0 {
		d.MaxDeliver = 5
	}
	if len(d.Backoff) == 0 {
		d.Backoff = []time.Duration{100 * time.Millisecond, time.Second, 5 * time.Second}
	}
	if d.AckWait == 0 {
		d.AckWait = 30 * time.Second
	}
	if d.MaxAckPending == 0 {
		d.MaxAckPending = 1024
	}
	if d.DeadLetter == "" {
		d.DeadLetter = "troupe.dlq." + d.Name
	}
	if err := ValidateTopic(d.DeadLetter); err != nil {
		return err
	}
	st, err := t.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       streamName(d.Name),
		Subjects:   d.Subjects,
		Storage:    jetstream.FileStorage,
		MaxAge:     d.MaxAge,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("topics: declare %q: %w", d.Name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.durable[d.Name] = &durableTopic{cfg: d, stream: st}
	t.ndurable.Store(int32(len(t.durable)))
	t.covers.Clear()
	return nil
}

func streamName(name string) string { return "TROUPE_" + name }

// durableFor finds the durable topic whose subjects cover a topic or
// pattern (a pattern must lie within one of them).
func (t *Topics) durableFor(topic string) *durableTopic {
	if t.ndurable.Load() == 0 {
		return nil
	}
	if d, ok := t.covers.Load(topic); ok {
		return d.(*durableTopic)
	}
	t.mu.Lock()
	var found *durableTopic
	for _, d := range t.durable {
		for _, s := range d.cfg.Subjects {
			if subjectCovers(s, topic) {
				found = d
			}
		}
	}
	t.mu.Unlock()
	if t.ndurable.Load() < 10000 { // bound the cache; topics are usually few
		t.covers.Store(topic, found)
	}
	return found
}

// subjectCovers reports whether every subject matched by sub is matched by
// pattern.
func subjectCovers(pattern, sub string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(sub, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) {
			return false
		}
		switch {
		case tok == "*":
			if s[i] == ">" {
				return false
			}
		case tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// Publish sends data to a topic. On a durable topic it returns once the
// stream has stored the message (and blocks while the stream pushes back);
// on a core topic once the message is handed to the server.
func (t *Topics) Publish(ctx context.Context, topic string, data []byte, header map[string]string) error {
	if err := ValidateTopic(topic); err != nil {
		return err
	}
	if max := int(t.nc.MaxPayload()); max > 0 && len(data) > max {
		return &TooLargeError{Topic: topic, Size: len(data), Limit: max}
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return ErrClosed
	}
	d := t.durableFor(topic)
	if d == nil && len(header) == 0 {
		// The common case, without building a message.
		if err := t.nc.Publish(topic, data); err != nil {
			return t.publishErr(topic, data, err)
		}
		t.m.pubCore.Inc()
		return nil
	}
	msg := nats.NewMsg(topic)
	msg.Data = data
	for k, v := range header {
		msg.Header.Set(k, v)
	}
	if d != nil {
		if _, err := t.js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("topics: publish to durable %q: %w", topic, err)
		}
		t.m.pubDurable.Inc()
		return nil
	}
	if err := t.nc.PublishMsg(msg); err != nil {
		return t.publishErr(topic, data, err)
	}
	t.m.pubCore.Inc()
	return nil
}

func (t *Topics) publishErr(topic string, data []byte, err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return &TooLargeError{Topic: topic, Size: len(data), Limit: int(t.nc.MaxPayload())}
	}
	return fmt.Errorf("topics: publish to %q: %w", topic, err)
}

// Close ends every subscription. It is idempotent.
func (t *Topics) Close() error {
	t.mu.Lock()
	t.closed = true
	subs := make([]*Subscription, 0, len(t.subs))
	for s := range t.subs {
		subs = append(subs, s)
	}
	t.mu.Unlock()
	for _, s := range subs {
		s.Unsubscribe()
	}
	return nil
}

type metrics struct {
	published   *prometheus.CounterVec
	delivered   *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	deadLetters prometheus.Counter
	// The hot-path children, resolved once (a label lookup hashes).
	pubCore, pubDurable, delCore, delDurable, dropSlow, dropRejected prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_topic_published_total", Help: "Messages published through the topics API, by guarantee (core or durable).",
		}, []string{"guarantee"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_topic_delivered_total", Help: "Messages delivered to subscriber actors, by guarantee.",
		}, []string{"guarantee"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "troupe_topic_dropped_total", Help: "Messages not delivered, by reason: slow_subscriber (core topics), rejected (by a plugin).",
		}, []string{"reason"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "troupe_topic_dead_lettered_total", Help: "Durable messages moved to their dead-letter topic after MaxDeliver attempts.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.delivered, m.dropped, m.deadLetters)
	}
	m.pubCore, m.pubDurable = m.published.WithLabelValues("core"), m.published.WithLabelValues("durable")
	m.delCore, m.delDurable = m.delivered.WithLabelValues("core"), m.delivered.WithLabelValues("durable")
	m.dropSlow, m.dropRejected = m.dropped.WithLabelValues("slow_subscriber"), m.dropped.WithLabelValues("rejected")
	return m
}
