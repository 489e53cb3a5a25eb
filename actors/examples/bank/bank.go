// Package bank is Troupe's demo domain: bank accounts as event-sourced
// entities and their balances as a read model. The stock binary's `dev`
// command runs it; it is also a worked example of the actors API.
//
//	rt, _ := actors.NewRuntime(actors.Config{Journal: j, ReadStore: rs})
//	if err := bank.Register(rt); err != nil { ... }
package bank

import (
	"context"
	"encoding/json"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
)

// Kind is the entity kind of accounts.
const Kind = "account"

// Account is the state of one account.
type Account struct {
	ID      string `json:"id"`
	Owner   string `json:"owner,omitempty"`
	Open    bool   `json:"open"`
	Closed  bool   `json:"closed"`
	Balance int64  `json:"balance"`
}

// Commands.
type (
	// Open opens the account for an owner.
	Open struct {
		Owner string `json:"owner"`
	}
	// Deposit adds a positive amount.
	Deposit struct {
		Amount int64 `json:"amount"`
	}
	// Withdraw takes a positive amount, never more than the balance.
	Withdraw struct {
		Amount int64 `json:"amount"`
	}
	// Close closes an account whose balance is zero.
	Close struct{}
)

// Events.
type (
	Opened struct {
		Owner string `json:"owner"`
	}
	Deposited struct {
		Amount int64 `json:"amount"`
	}
	Withdrawn struct {
		Amount int64 `json:"amount"`
	}
	Closed struct{}
)

// Reply is what account commands answer.
type Reply struct {
	Balance int64 `json:"balance"`
}

// Accounts describes the account kind.
var Accounts = newAccounts()

func newAccounts() *actors.Kind[Account] {
	k := actors.NewKind(Kind, func(id string) Account { return Account{ID: id} })
	actors.Handle(k, func(s Account, c Open) (actors.Decision, error) {
		switch {
		case s.Closed:
			return actors.Decision{}, actors.Reject("account %s is closed", s.ID)
		case s.Open:
			return actors.Decision{}, actors.Reject("account %s is already open", s.ID)
		}
		return actors.Decision{Events: []any{Opened{Owner: c.Owner}}, Reply: Reply{Balance: 0}}, nil
	})
	actors.Handle(k, func(s Account, c Deposit) (actors.Decision, error) {
		if err := usable(s); err != nil {
			return actors.Decision{}, err
		}
		if c.Amount <= 0 {
			return actors.Decision{}, actors.Reject("deposit amount must be positive, got %d", c.Amount)
		}
		return actors.Decision{Events: []any{Deposited{Amount: c.Amount}}, Reply: Reply{Balance: s.Balance + c.Amount}}, nil
	})
	actors.Handle(k, func(s Account, c Withdraw) (actors.Decision, error) {
		if err := usable(s); err != nil {
			return actors.Decision{}, err
		}
		if c.Amount <= 0 {
			return actors.Decision{}, actors.Reject("withdrawal amount must be positive, got %d", c.Amount)
		}
		if c.Amount > s.Balance {
			return actors.Decision{}, actors.Reject("insufficient funds: balance %d, withdrawal %d", s.Balance, c.Amount)
		}
		return actors.Decision{Events: []any{Withdrawn{Amount: c.Amount}}, Reply: Reply{Balance: s.Balance - c.Amount}}, nil
	})
	actors.Handle(k, func(s Account, c Close) (actors.Decision, error) {
		if err := usable(s); err != nil {
			return actors.Decision{}, err
		}
		if s.Balance != 0 {
			return actors.Decision{}, actors.Reject("account %s still holds %d; withdraw it before closing", s.ID, s.Balance)
		}
		return actors.Decision{Events: []any{Closed{}}, Reply: Reply{Balance: 0}}, nil
	})
	actors.On(k, func(s Account, e Opened) Account { s.Open, s.Owner = true, e.Owner; return s })
	actors.On(k, func(s Account, e Deposited) Account { s.Balance += e.Amount; return s })
	actors.On(k, func(s Account, e Withdrawn) Account { s.Balance -= e.Amount; return s })
	actors.On(k, func(s Account, e Closed) Account { s.Open, s.Closed = false, true; return s })
	return k
}

func usable(s Account) error {
	switch {
	case s.Closed:
		return actors.Reject("account %s is closed", s.ID)
	case !s.Open:
		return actors.Reject("account %s is not open", s.ID)
	}
	return nil
}

// Balance is the read model row of one account in the balances projection.
type Balance struct {
	ID      string `json:"id"`
	Owner   string `json:"owner,omitempty"`
	Balance int64  `json:"balance"`
	Open    bool   `json:"open"`
}

// Balances is the projection of account balances.
var Balances = actors.Projection{
	Name:   "balances",
	Filter: journal.Filter{Kind: Kind},
	Apply: func(tx *actors.Tx, ev journal.Event) error {
		_, id, err := journal.ParseStream(ev.Stream)
		if err != nil {
			return err
		}
		var b Balance
		if _, err := tx.GetJSON(id, &b); err != nil {
			return err
		}
		b.ID = id
		switch ev.Type {
		case "Opened":
			var e Opened
			if err := json.Unmarshal(ev.Payload, &e); err != nil {
				return err
			}
			b.Owner, b.Open = e.Owner, true
		case "Deposited":
			var e Deposited
			if err := json.Unmarshal(ev.Payload, &e); err != nil {
				return err
			}
			b.Balance += e.Amount
		case "Withdrawn":
			var e Withdrawn
			if err := json.Unmarshal(ev.Payload, &e); err != nil {
				return err
			}
			b.Balance -= e.Amount
		case "Closed":
			b.Open = false
		default:
			return nil
		}
		return tx.SetJSON(id, b)
	},
}

// BalanceQuery answers {"id": "acc-1"} with that account's balance, a
// number.
var BalanceQuery = actors.Query{
	Name:       "balance",
	Projection: Balances.Name,
	Handle: func(_ context.Context, v *actors.View, params json.RawMessage) (any, error) {
		b, err := lookup("balance", v, params)
		if err != nil {
			return nil, err
		}
		return b.Balance, nil
	},
}

// AccountQuery answers {"id": "acc-1"} with that account's Balance row.
var AccountQuery = actors.Query{
	Name:       "account",
	Projection: Balances.Name,
	Handle: func(_ context.Context, v *actors.View, params json.RawMessage) (any, error) {
		return lookup("account", v, params)
	},
}

func lookup(query string, v *actors.View, params json.RawMessage) (Balance, error) {
	var p struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(params, &p); err != nil {
		return Balance{}, actors.Reject("%s query: params do not decode: %v", query, err)
	}
	if p.ID == "" {
		return Balance{}, actors.Reject(`%s query: missing "id"`, query)
	}
	var b Balance
	ok, err := v.GetJSON(p.ID, &b)
	if err != nil {
		return Balance{}, err
	}
	if !ok {
		return Balance{}, actors.NotFound("account %q", p.ID)
	}
	return b, nil
}

// Register adds the bank's kinds, projections and queries to rt.
func Register(rt *actors.Runtime) error {
	if err := rt.Register(Accounts); err != nil {
		return err
	}
	if err := rt.RegisterProjection(Balances); err != nil {
		return err
	}
	if err := rt.RegisterQuery(BalanceQuery); err != nil {
		return err
	}
	return rt.RegisterQuery(AccountQuery)
}
