package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// protoactor's dead-letter throttle: a timer goroutine that ends by
		// itself one throttle period after a message to a stopped actor.
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}

func TestOrderCommands(t *testing.T) {
	placed := []any{Placed{Item: "book", Qty: 1}}
	tests := []struct {
		name   string
		given  []any
		when   any
		events []any
		reply  any
		reject string
	}{
		{name: "place", when: Place{Item: "book", Qty: 1}, events: placed, reply: Reply{Status: "placed"}},
		{name: "place twice", given: placed, when: Place{Item: "book", Qty: 1}, reject: "order o-1 is already placed"},
		{name: "place nothing", when: Place{Qty: 1}, reject: "an order needs an item and a positive qty"},
		{name: "pay", given: placed, when: Pay{}, events: []any{Paid{}}, reply: Reply{Status: "paid"}},
		{name: "pay twice", given: append(placed, Paid{}), when: Pay{}, reject: "order o-1 is paid, not placed"},
		{name: "ship", given: append(placed, Paid{}), when: Ship{}, events: []any{Shipped{}}, reply: Reply{Status: "shipped"}},
		{name: "ship again", given: append(placed, Paid{}, Shipped{}), when: Ship{}, events: nil, reply: Reply{Status: "shipped"}},
		{name: "expire unpaid", given: placed, when: Expire{}, events: []any{Expired{}}, reply: Reply{Status: "expired"}},
		{name: "expire paid", given: append(placed, Paid{}), when: Expire{}, events: nil, reply: Reply{Status: "paid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			then := actorstest.Given(Orders, "o-1", tt.given...).When(tt.when)
			if tt.reject != "" {
				then.ThenRejected(t, tt.reject)
				return
			}
			then.ThenEvents(t, tt.events...).ThenReply(t, tt.reply)
		})
	}
}

// Paying an order that was never placed is not_found, not a rejection.
func TestPayUnknownOrder(t *testing.T) {
	_, err := actorstest.Given(Orders, "o-9").When(Pay{}).Decision()
	var nf *actors.NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("err = %v, want a NotFoundError", err)
	}
}

// Placing schedules the expiry timer; paying cancels it.
func TestOrderTimers(t *testing.T) {
	d, err := actorstest.Given(Orders, "o-1").When(Place{Item: "book", Qty: 1}).Decision()
	if err != nil || len(d.Schedule) != 1 || d.Schedule[0].ID != "expire" || d.Schedule[0].After != PayWithin {
		t.Fatalf("place: %+v, %v", d.Schedule, err)
	}
	d, err = actorstest.Given(Orders, "o-1", Placed{Item: "book", Qty: 1}).When(Pay{}).Decision()
	if err != nil || len(d.Cancel) != 1 || d.Cancel[0] != "expire" {
		t.Fatalf("pay: %+v, %v", d.Cancel, err)
	}
}

// waitRow polls the order query until the row has status, or fails.
func waitRow(t *testing.T, n *actorstest.Node, id, status string) Row {
	t.Helper()
	ctx := context.Background()
	var r Row
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := n.Query(ctx, "order", map[string]string{"id": id}, journal.Token{}, &r)
		if err == nil && r.Status == status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s: status %q (%v), want %q", id, r.Status, err, status)
		}
		time.Sleep(20 * time.Millisecond) // polling the read model, bounded above
	}
}

// The real runtime on Badger: the projection serves the query, the reactor
// ships paid orders, and the durable timer expires unpaid ones, also after
// a restart.
func TestOrdersInTheRuntime(t *testing.T) {
	old := PayWithin
	PayWithin = 300 * time.Millisecond
	defer func() { PayWithin = old }()

	ctx := context.Background()
	n := actorstest.Start(t, actorstest.Config{Setup: Register})
	if _, err := n.Send(ctx, Kind, "o-1", Place{Item: "book", Qty: 2}); err != nil {
		t.Fatal(err)
	}
	out, err := n.Send(ctx, Kind, "o-1", Pay{})
	if err != nil {
		t.Fatal(err)
	}
	var r Row
	if _, err := n.Query(ctx, "order", map[string]string{"id": "o-1"}, out.Token(), &r); err != nil || r.Status == "placed" {
		t.Fatalf("after pay: %+v, %v", r, err) // read-your-writes: at least paid
	}
	if r := waitRow(t, n, "o-1", "shipped"); r.Item != "book" || r.Qty != 2 {
		t.Fatalf("row %+v", r)
	}

	if _, err := n.Send(ctx, Kind, "o-2", Place{Item: "pen", Qty: 1}); err != nil {
		t.Fatal(err)
	}
	n = n.Restart(t) // the timer is durable: it fires after a restart too
	waitRow(t, n, "o-2", "expired")

	if _, err := n.Query(ctx, "order", map[string]string{"id": "nope"}, journal.Token{}, nil); !errors.As(err, new(*actors.NotFoundError)) {
		t.Fatalf("unknown order: %v", err)
	}
}
