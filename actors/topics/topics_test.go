package topics_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/topics"
	"github.com/troupe-dev/troupe/cluster/bus"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// protoactor's dead-letter throttle: a timer goroutine that ends by
		// itself one throttle period after a message to a stopped actor.
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}

type env struct {
	bus *bus.Bus
	sys *actor.ActorSystem
	t   *topics.Topics
}

func newEnv(t testing.TB, cfg topics.Config) *env {
	t.Helper()
	b, err := bus.New(bus.Config{NoListen: true, StoreDir: t.TempDir(), MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	sys := actors.NewSystem(nil)
	cfg.Conn, cfg.System = b.Conn(), sys
	tp, err := topics.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tp.Close()
		sys.Shutdown()
		b.Close()
	})
	return &env{bus: b, sys: sys, t: tp}
}

// collector is a subscriber that forwards what it receives to a channel
// and settles durable messages with handle's verdict.
func collector(out chan<- *topics.Message, handle func(*topics.Message) error) *actor.Props {
	return actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*topics.Message); ok {
			var err error
			if handle != nil {
				err = handle(m)
			}
			if err != nil {
				m.Nak(err)
				return
			}
			m.Ack()
			out <- m
		}
	})
}

func recv(t *testing.T, ch <-chan *topics.Message) *topics.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

func none(t *testing.T, ch <-chan *topics.Message, d time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		t.Fatalf("unexpected message on %s: %s", m.Topic, m.Data)
	case <-time.After(d):
	}
}

func TestCoreTopicsAndWildcards(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	one, all := make(chan *topics.Message, 10), make(chan *topics.Message, 10)
	if _, err := e.t.Spawn(ctx, collector(one, nil), "orders.*", topics.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.t.Spawn(ctx, collector(all, nil), "orders.>", topics.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.t.Publish(ctx, "orders.created", []byte("a"), map[string]string{"X-Id": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := e.t.Publish(ctx, "orders.eu.created", []byte("b"), nil); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, one); m.Topic != "orders.created" || string(m.Data) != "a" || m.Header["X-Id"] != "1" {
		t.Fatalf("orders.* got %+v", m)
	}
	none(t, one, 100*time.Millisecond) // orders.eu.created is two tokens deep
	got := map[string]bool{recv(t, all).Topic: true, recv(t, all).Topic: true}
	if !got["orders.created"] || !got["orders.eu.created"] {
		t.Fatalf("orders.> got %v", got)
	}
}

func TestCoreGroupSplitsTheLoad(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	a, b := make(chan *topics.Message, 200), make(chan *topics.Message, 200)
	for _, ch := range []chan *topics.Message{a, b} {
		if _, err := e.t.Spawn(ctx, collector(ch, nil), "jobs", topics.SubscribeOptions{Group: "workers"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if err := e.t.Publish(ctx, "jobs", []byte(fmt.Sprint(i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(a)+len(b) < 100 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(a)+len(b) != 100 || len(a) == 0 || len(b) == 0 {
		t.Fatalf("group members got %d and %d of 100", len(a), len(b))
	}
}

func declare(t *testing.T, e *env, d topics.Durable) {
	t.Helper()
	if err := e.t.Declare(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

func TestDurableSubscriberReceivesWhatItMissed(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	declare(t, e, topics.Durable{Name: "payments", Subjects: []string{"payments.>"}})
	ch := make(chan *topics.Message, 100)
	sub, err := e.t.Spawn(ctx, collector(ch, nil), "payments.>", topics.SubscribeOptions{Group: "ledger"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.t.Publish(ctx, "payments.in", []byte("1"), nil); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, ch); string(m.Data) != "1" || !m.Durable || m.Delivery != 1 {
		t.Fatalf("got %+v", m)
	}
	sub.Unsubscribe() // the subscriber goes down
	for i := 2; i <= 4; i++ {
		if err := e.t.Publish(ctx, "payments.in", []byte(fmt.Sprint(i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	none(t, ch, 100*time.Millisecond)
	if _, err := e.t.Spawn(ctx, collector(ch, nil), "payments.>", topics.SubscribeOptions{Group: "ledger"}); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 4; i++ {
		if m := recv(t, ch); string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("after coming back got %q, want %d", m.Data, i)
		}
	}
	none(t, ch, 100*time.Millisecond) // "1" was acked: not redelivered
}

func TestDurableGroupSplitsTheLoad(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	declare(t, e, topics.Durable{Name: "work", Subjects: []string{"work"}, MaxAckPending: 8})
	a, b := make(chan *topics.Message, 300), make(chan *topics.Message, 300)
	slow := func(*topics.Message) error { time.Sleep(time.Millisecond); return nil }
	for _, ch := range []chan *topics.Message{a, b} {
		if _, err := e.t.Spawn(ctx, collector(ch, slow), "work", topics.SubscribeOptions{Group: "crew"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 200 {
		if err := e.t.Publish(ctx, "work", []byte(fmt.Sprint(i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(a)+len(b) < 200 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(a)+len(b) != 200 || len(a) == 0 || len(b) == 0 {
		t.Fatalf("group members got %d and %d of 200", len(a), len(b))
	}
}

func TestFailingHandlerEndsInTheDeadLetterTopic(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	declare(t, e, topics.Durable{Name: "risky", Subjects: []string{"risky"}, MaxDeliver: 3,
		Backoff: []time.Duration{10 * time.Millisecond}})
	dlq := make(chan *topics.Message, 10)
	if _, err := e.t.Spawn(ctx, collector(dlq, nil), "troupe.dlq.risky", topics.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	never := make(chan *topics.Message, 10)
	fail := func(m *topics.Message) error { attempts.Add(1); return errors.New("cannot handle " + string(m.Data)) }
	if _, err := e.t.Spawn(ctx, collector(never, fail), "risky", topics.SubscribeOptions{Group: "g"}); err != nil {
		t.Fatal(err)
	}
	if err := e.t.Publish(ctx, "risky", []byte("poison"), nil); err != nil {
		t.Fatal(err)
	}
	m := recv(t, dlq)
	if string(m.Data) != "poison" || m.Header["Troupe-Topic"] != "risky" || m.Header["Troupe-Deliveries"] != "3" ||
		m.Header["Troupe-Error"] != "cannot handle poison" {
		t.Fatalf("dead letter %+v", m)
	}
	none(t, never, 200*time.Millisecond)
	if n := attempts.Load(); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	for _, bad := range []string{"", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a>b"} {
		if err := e.t.Publish(ctx, bad, nil, nil); !errors.Is(err, topics.ErrInvalidTopic) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidTopic", bad, err)
		}
	}
	for _, bad := range []string{"a.>.b", "a.b*", "x y"} {
		if _, err := e.t.Spawn(ctx, collector(nil, nil), bad, topics.SubscribeOptions{}); !errors.Is(err, topics.ErrInvalidTopic) {
			t.Errorf("Spawn(%q) = %v, want ErrInvalidTopic", bad, err)
		}
	}
	var tooLarge *topics.TooLargeError
	if err := e.t.Publish(ctx, "big", make([]byte, 65<<10), nil); !errors.As(err, &tooLarge) || tooLarge.Limit != 64<<10 {
		t.Errorf("oversized publish = %v", err)
	}
	declare(t, e, topics.Durable{Name: "d", Subjects: []string{"d.>"}})
	if _, err := e.t.Spawn(ctx, collector(nil, nil), "d.x", topics.SubscribeOptions{}); err == nil || !strings.Contains(err.Error(), "needs a group") {
		t.Errorf("durable subscription without group = %v", err)
	}
}

func TestSlowCoreSubscriberDropsAndIsCounted(t *testing.T) {
	e := newEnv(t, topics.Config{MaxPending: 10})
	ctx := context.Background()
	release := make(chan struct{})
	out := make(chan *topics.Message, 1000)
	sub, err := e.t.Spawn(ctx, collector(out, func(*topics.Message) error { <-release; return nil }), "firehose", topics.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if err := e.t.Publish(ctx, "firehose", []byte(fmt.Sprint(i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.bus.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sub.Dropped() < 490 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if d := sub.Dropped(); d != 490 {
		t.Fatalf("dropped %d, want exactly 490: 10 fit the bound", d)
	}
	close(release)
	// The node is not stalled: the subscriber works off its 10 and new
	// messages flow again.
	for range 10 {
		recv(t, out)
	}
	if err := e.t.Publish(ctx, "firehose", []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, out); string(m.Data) != "after" {
		t.Fatalf("got %q after catching up", m.Data)
	}
}

func TestSubscriptionEndsWithTheActor(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	ch := make(chan *topics.Message, 10)
	sub, err := e.t.Spawn(ctx, collector(ch, nil), "news", topics.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := e.bus.Conn().NumSubscriptions()
	if err := e.sys.Root.StopFuture(sub.PID()).Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.bus.Conn().NumSubscriptions() >= before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.bus.Conn().NumSubscriptions(); n >= before {
		t.Fatalf("%d subscriptions after the actor stopped, had %d", n, before)
	}
	if err := e.t.Publish(ctx, "news", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	none(t, ch, 100*time.Millisecond)
}

func TestDeliveriesPassThroughTheSidecarChain(t *testing.T) {
	e := newEnv(t, topics.Config{Intercept: func(_ context.Context, m *troupev1.TopicMessage) error {
		if strings.Contains(string(m.GetPayload()), "secret") {
			return &actors.RejectedError{Reason: "no secrets"}
		}
		m.Payload = []byte(strings.ToUpper(string(m.GetPayload())))
		if m.Metadata == nil {
			m.Metadata = map[string]string{}
		}
		m.Metadata["Seen-By"] = "plugin"
		return nil
	}})
	ctx := context.Background()
	ch := make(chan *topics.Message, 10)
	if _, err := e.t.Spawn(ctx, collector(ch, nil), "chat", topics.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a secret", "hello"} {
		if err := e.t.Publish(ctx, "chat", []byte(s), nil); err != nil {
			t.Fatal(err)
		}
	}
	if m := recv(t, ch); string(m.Data) != "HELLO" || m.Header["Seen-By"] != "plugin" {
		t.Fatalf("got %q %v", m.Data, m.Header)
	}
	none(t, ch, 100*time.Millisecond)
}

func TestDurableTopicPushesBackOnASlowSubscriber(t *testing.T) {
	e := newEnv(t, topics.Config{})
	ctx := context.Background()
	declare(t, e, topics.Durable{Name: "slow", Subjects: []string{"slow"}, MaxAckPending: 5})
	held := make(chan *topics.Message, 100)
	props := actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*topics.Message); ok {
			held <- m // handled later: not acked yet
		}
	})
	if _, err := e.t.Spawn(ctx, props, "slow", topics.SubscribeOptions{Group: "g"}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := e.t.Publish(ctx, "slow", []byte(fmt.Sprint(i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	var got []*topics.Message
	for len(got) < 5 {
		got = append(got, recv(t, held))
	}
	none(t, held, 300*time.Millisecond) // the stream holds the other 15 back
	for _, m := range got {
		m.Ack()
	}
	for range 5 {
		recv(t, held).Ack()
	}
}

// Unsubscribe stops the subscriber and its watcher without a dead letter
// (the watcher stopped first left the actor's Terminated to the dead
// letters, logged at every node's shutdown).
func TestUnsubscribeLeavesNoDeadLetter(t *testing.T) {
	e := newEnv(t, topics.Config{})
	var dead atomic.Int32
	es := e.sys.EventStream.Subscribe(func(evt any) {
		if _, ok := evt.(*actor.DeadLetterEvent); ok {
			dead.Add(1)
		}
	})
	defer e.sys.EventStream.Unsubscribe(es)
	ch := make(chan *topics.Message, 10)
	for range 5 {
		sub, err := e.t.Spawn(context.Background(), collector(ch, nil), "news", topics.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sub.Unsubscribe()
	}
	time.Sleep(200 * time.Millisecond) // a dead letter would be published by now
	if n := dead.Load(); n != 0 {
		t.Fatalf("%d dead letters after 5 unsubscribes", n)
	}
}
