// Package bank is Troupe's demo domain and a worked example of the actors
// API: event-sourced bank accounts, read models over them, and a process
// manager that moves money between accounts. The stock binary's `dev`
// command runs it.
//
// Write side, two entity kinds:
//
//   - account (Accounts): Open, Deposit, Withdraw (rejected on insufficient
//     funds), Close (only when empty). Events Opened, Deposited, Withdrawn,
//     Closed; every command replies {"balance": N}.
//   - transfer (Transfers): Start{from, to, amount} records the intent; the
//     process manager then moves it through debited to completed, or to
//     failed (the debit was rejected), or through refunding to compensated
//     (the credit was rejected and the debit was paid back).
//
// Read side, projections of the global log and the queries they serve:
//
//   - balances: "balance" {"id"} → the balance, a number; "account" {"id"}
//     → the account's row.
//   - statement: "statement" {"id", "after", "limit"} → one page of the
//     account's money events with the balance after each, and the cursor of
//     the next page.
//   - top-accounts: "top-accounts" {"limit"} → the open accounts with the
//     highest balances.
//   - transfers: "transfer" {"id"} → a transfer's parties, amount, status
//     and reason.
//
// The transfer process is a reactor (TransferProcess) over the transfer
// events: on Started it withdraws from the source, on Debited it deposits
// to the destination, on CreditRejected it deposits back to the source, and
// each outcome is recorded on the transfer as its next event. Every step is
// safe to repeat after a crash; see TransferProcess for how.
//
//	rt, _ := actors.NewRuntime(actors.Config{Journal: j, ReadStore: rs})
//	if err := bank.Register(rt); err != nil { ... }
package bank

import (
	"context"
	"encoding/json"
	"math"
	"time"

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
	// Refs and OlderRefs hold the references of the recent deposits and
	// withdrawals, so that a repeated one is recognised (see Deposit.Ref):
	// new refs go into Refs, and when it holds maxRefs, it becomes
	// OlderRefs (the older set is dropped). So an account remembers its
	// last maxRefs to 2×maxRefs refs, and its state stays bounded however
	// many transfers it takes part in.
	Refs      map[string]bool `json:"refs,omitempty"`
	OlderRefs map[string]bool `json:"older_refs,omitempty"`
}

// maxRefs bounds the refs an account remembers (see Account.Refs).
const maxRefs = 1000

// Commands.
type (
	// Open opens the account for an owner.
	Open struct {
		Owner string `json:"owner"`
	}
	// Deposit adds a positive amount.
	Deposit struct {
		Amount int64 `json:"amount"`
		// Ref, when set, names the operation (the transfer process uses
		// "<transfer id>/credit"): an account applies a recent ref once
		// (see Account.Refs), and a repeat changes nothing and succeeds,
		// even if the account could no longer take the deposit. Send an
		// idempotency key too: the runtime answers a repeated key with the
		// first reply, however old, before the handler runs.
		Ref string `json:"ref,omitempty"`
	}
	// Withdraw takes a positive amount, never more than the balance.
	Withdraw struct {
		Amount int64 `json:"amount"`
		// Ref is as in Deposit: a repeat of an applied withdrawal succeeds
		// without effect, even once the balance no longer covers it.
		Ref string `json:"ref,omitempty"`
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
		Amount int64  `json:"amount"`
		Ref    string `json:"ref,omitempty"`
	}
	Withdrawn struct {
		Amount int64  `json:"amount"`
		Ref    string `json:"ref,omitempty"`
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
		if s.applied(c.Ref) {
			return actors.Decision{Reply: Reply{Balance: s.Balance}}, nil
		}
		if err := usable(s); err != nil {
			return actors.Decision{}, err
		}
		if c.Amount <= 0 {
			return actors.Decision{}, actors.Reject("deposit amount must be positive, got %d", c.Amount)
		}
		if c.Amount > math.MaxInt64-s.Balance {
			return actors.Decision{}, actors.Reject("deposit of %d would overflow the balance %d", c.Amount, s.Balance)
		}
		return actors.Decision{Events: []any{Deposited{Amount: c.Amount, Ref: c.Ref}}, Reply: Reply{Balance: s.Balance + c.Amount}}, nil
	})
	actors.Handle(k, func(s Account, c Withdraw) (actors.Decision, error) {
		if s.applied(c.Ref) {
			return actors.Decision{Reply: Reply{Balance: s.Balance}}, nil
		}
		if err := usable(s); err != nil {
			return actors.Decision{}, err
		}
		if c.Amount <= 0 {
			return actors.Decision{}, actors.Reject("withdrawal amount must be positive, got %d", c.Amount)
		}
		if c.Amount > s.Balance {
			return actors.Decision{}, actors.Reject("insufficient funds: balance %d, withdrawal %d", s.Balance, c.Amount)
		}
		return actors.Decision{Events: []any{Withdrawn{Amount: c.Amount, Ref: c.Ref}}, Reply: Reply{Balance: s.Balance - c.Amount}}, nil
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
	actors.On(k, func(s Account, e Deposited) Account { s.Balance += e.Amount; return s.withRef(e.Ref) })
	actors.On(k, func(s Account, e Withdrawn) Account { s.Balance -= e.Amount; return s.withRef(e.Ref) })
	actors.On(k, func(s Account, e Closed) Account { s.Open, s.Closed = false, true; return s })
	return k
}

// applied tells whether the account remembers ref.
func (s Account) applied(ref string) bool {
	return ref != "" && (s.Refs[ref] || s.OlderRefs[ref])
}

// withRef records ref as applied. The set is updated in place: the entity
// keeps only its newest state, and copying a set on every event would cost
// maxRefs per event.
func (s Account) withRef(ref string) Account {
	if ref == "" {
		return s
	}
	if len(s.Refs) >= maxRefs {
		s.OlderRefs, s.Refs = s.Refs, nil
	}
	if s.Refs == nil {
		s.Refs = map[string]bool{}
	}
	s.Refs[ref] = true
	return s
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

// accountEvent decodes an account event of the global log; ok is false for
// the types that are not the account's own (the runtime's timer events).
func accountEvent(ev journal.Event) (e any, ok bool, err error) {
	switch ev.Type {
	case "Opened":
		e, err = decodeEvent[Opened](ev.Payload)
	case "Deposited":
		e, err = decodeEvent[Deposited](ev.Payload)
	case "Withdrawn":
		e, err = decodeEvent[Withdrawn](ev.Payload)
	case "Closed":
		e = Closed{}
	default:
		return nil, false, nil
	}
	return e, err == nil, err
}

func decodeEvent[E any](p []byte) (E, error) {
	var e E
	err := json.Unmarshal(p, &e)
	return e, err
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
		e, ok, err := accountEvent(ev)
		if !ok {
			return err
		}
		var b Balance
		if _, err := tx.GetJSON(id, &b); err != nil {
			return err
		}
		b.ID = id
		switch e := e.(type) {
		case Opened:
			b.Owner, b.Open = e.Owner, true
		case Deposited:
			b.Balance += e.Amount
		case Withdrawn:
			b.Balance -= e.Amount
		case Closed:
			b.Open = false
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
		return Balance{}, badParams(query, "params: %s", describeJSONError(err))
	}
	if p.ID == "" {
		return Balance{}, badParams(query, `missing "id"`)
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

// pageLimit applies a query's default and maximum page size.
func pageLimit(query string, limit, def, max int) (int, error) {
	switch {
	case limit == 0:
		return def, nil
	case limit < 0 || limit > max:
		return 0, badParams(query, `"limit" must be between 1 and %d, got %d`, max, limit)
	}
	return limit, nil
}

// Register adds the bank's kinds, projections, queries and the transfer
// process to rt.
func Register(rt *actors.Runtime) error { return register(rt, nil) }

// register is Register with a fault hook for the transfer process (tests).
func register(rt *actors.Runtime, fault faultFunc) error {
	for _, k := range []actors.Behavior{Accounts, Transfers, Alerts} {
		if err := rt.Register(k); err != nil {
			return err
		}
	}
	for _, p := range []actors.Projection{Balances, Statements, TopAccounts, TransferStates, LargeTransfers} {
		if err := rt.RegisterProjection(p); err != nil {
			return err
		}
	}
	for _, q := range []actors.Query{BalanceQuery, AccountQuery, StatementQuery, TopAccountsQuery, TransferQuery, LargeTransfersQuery} {
		if err := rt.RegisterQuery(q); err != nil {
			return err
		}
	}
	if err := rt.RegisterSingleton(LargeTransferMonitor(rt, time.Second, rt.Logger())); err != nil {
		return err
	}
	pm := &process{rt: rt, fault: fault}
	return rt.RegisterReactor(pm.reactor())
}
