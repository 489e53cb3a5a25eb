package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/codes"
	"github.com/troupe-dev/troupe/journal"
)

// Kind is the entity kind of orders.
const Kind = "order"

// Order is the state of one order: the fold of its events.
type Order struct {
	ID     string `json:"id"`
	Item   string `json:"item"`
	Qty    int    `json:"qty"`
	Status string `json:"status"` // "" (new), placed, paid, shipped, expired
}

// Commands (imperative).
type (
	// Place places a new order.
	Place struct {
		Item string `json:"item"`
		Qty  int    `json:"qty"`
	}
	// Pay pays a placed order.
	Pay struct{}
	// Ship ships a paid order; only the node sends it (the shipping reactor).
	Ship struct{}
	// Expire ends an order nobody paid; only its timer sends it.
	Expire struct{}
)

// Events (past tense).
type (
	Placed struct {
		Item string `json:"item"`
		Qty  int    `json:"qty"`
	}
	Paid    struct{}
	Shipped struct{}
	Expired struct{}
)

// Reply is what every order command answers.
type Reply struct {
	Status string `json:"status"`
}

// PayWithin is how long a placed order waits for its payment.
var PayWithin = 15 * time.Minute

// Orders describes the order kind.
var Orders = newOrders()

func newOrders() *actors.Kind[Order] {
	k := actors.NewKind(Kind, func(id string) Order { return Order{ID: id} })
	actors.Handle(k, func(s Order, c Place) (actors.Decision, error) {
		switch {
		case s.Status != "":
			return actors.Decision{}, actors.Reject("order %s is already %s", s.ID, s.Status)
		case c.Item == "" || c.Qty <= 0:
			return actors.Decision{}, actors.Reject("an order needs an item and a positive qty, got %q × %d", c.Item, c.Qty)
		}
		return actors.Decision{
			Events: []any{Placed{Item: c.Item, Qty: c.Qty}},
			Reply:  Reply{Status: "placed"},
			// A durable timer: Expire reaches this order after PayWithin,
			// also across restarts, unless Pay cancels it first.
			Schedule: []actors.Timer{{ID: "expire", After: PayWithin, Command: Expire{}}},
		}, nil
	})
	actors.Handle(k, func(s Order, c Pay) (actors.Decision, error) {
		switch s.Status {
		case "":
			return actors.Decision{}, actors.NotFound("order %s", s.ID)
		case "placed":
			return actors.Decision{Events: []any{Paid{}}, Reply: Reply{Status: "paid"}, Cancel: []string{"expire"}}, nil
		}
		return actors.Decision{}, actors.Reject("order %s is %s, not placed", s.ID, s.Status)
	})
	actors.HandleInternal(k, func(s Order, c Ship) (actors.Decision, error) {
		if s.Status != "paid" { // shipped already: a repeat changes nothing
			return actors.Decision{Reply: Reply{Status: s.Status}}, nil
		}
		return actors.Decision{Events: []any{Shipped{}}, Reply: Reply{Status: "shipped"}}, nil
	})
	actors.HandleInternal(k, func(s Order, c Expire) (actors.Decision, error) {
		if s.Status != "placed" {
			return actors.Decision{Reply: Reply{Status: s.Status}}, nil
		}
		return actors.Decision{Events: []any{Expired{}}, Reply: Reply{Status: "expired"}}, nil
	})
	actors.On(k, func(s Order, e Placed) Order { s.Item, s.Qty, s.Status = e.Item, e.Qty, "placed"; return s })
	actors.On(k, func(s Order, e Paid) Order { s.Status = "paid"; return s })
	actors.On(k, func(s Order, e Shipped) Order { s.Status = "shipped"; return s })
	actors.On(k, func(s Order, e Expired) Order { s.Status = "expired"; return s })
	return k
}

// Row is the read model of one order.
type Row struct {
	ID     string `json:"id"`
	Item   string `json:"item"`
	Qty    int    `json:"qty"`
	Status string `json:"status"`
}

// OrderRows is the projection of orders into rows, one per order.
var OrderRows = actors.Projection{
	Name:   "orders",
	Filter: journal.Filter{Kind: Kind},
	Apply: func(tx *actors.Tx, ev journal.Event) error {
		_, id, err := journal.ParseStream(ev.Stream)
		if err != nil {
			return err
		}
		var r Row
		if _, err := tx.GetJSON(id, &r); err != nil {
			return err
		}
		r.ID = id
		switch ev.Type { // events arrive encoded: decode by their type
		case "Placed":
			var e Placed
			if err := json.Unmarshal(ev.Payload, &e); err != nil {
				return err
			}
			r.Item, r.Qty, r.Status = e.Item, e.Qty, "placed"
		case "Paid":
			r.Status = "paid"
		case "Shipped":
			r.Status = "shipped"
		case "Expired":
			r.Status = "expired"
		default: // the runtime's own events (timers): not ours
			return nil
		}
		return tx.SetJSON(id, r)
	},
}

// OrderQuery answers {"id": "o-1"} with that order's Row.
var OrderQuery = actors.Query{
	Name:       "order",
	Projection: OrderRows.Name,
	Handle: func(_ context.Context, v *actors.View, params json.RawMessage) (any, error) {
		var p struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(params, &p); err != nil || p.ID == "" {
			// invalid_argument: the client's request is malformed
			return nil, &codes.Error{Code: codes.InvalidArgument, Message: `order query: want {"id": "..."}`}
		}
		var r Row
		ok, err := v.GetJSON(p.ID, &r)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, actors.NotFound("order %q", p.ID)
		}
		return r, nil
	},
}

// shipping is a reactor: every Paid order gets shipped.
func shipping(rt *actors.Runtime) actors.Reactor {
	return actors.Reactor{
		Name:   "shipping",
		Filter: journal.Filter{Kind: Kind},
		React: func(ctx context.Context, ev journal.Event) error {
			if ev.Type != "Paid" {
				return nil
			}
			_, id, err := journal.ParseStream(ev.Stream)
			if err != nil {
				return err
			}
			cmd, err := actors.NewCommand(Kind, id, Ship{})
			if err != nil {
				return err
			}
			// After a crash the reactor may see this event again: the key,
			// derived from the event, makes the repeat a no-op.
			cmd.IdempotencyKey = fmt.Sprintf("ship/%s/%d", ev.Stream, ev.Sequence)
			_, err = rt.Send(ctx, cmd)
			var rejected *actors.RejectedError
			if errors.As(err, &rejected) {
				return nil // a domain refusal: nothing to retry
			}
			return err // nil, or a failure worth retrying
		},
	}
}

// Register adds the order kind, its projection, query and reactor to rt.
func Register(rt *actors.Runtime) error {
	if err := rt.Register(Orders); err != nil {
		return err
	}
	if err := rt.RegisterProjection(OrderRows); err != nil {
		return err
	}
	if err := rt.RegisterQuery(OrderQuery); err != nil {
		return err
	}
	return rt.RegisterReactor(shipping(rt))
}
