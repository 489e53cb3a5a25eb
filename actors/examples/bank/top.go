package bank

import (
	"context"
	"encoding/json"
	"fmt"
	"math"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
)

// Ranked is one account of the top-accounts read model.
type Ranked struct {
	ID      string `json:"id"`
	Owner   string `json:"owner,omitempty"`
	Balance int64  `json:"balance"`
}

// TopPage is the top-accounts query's result.
type TopPage struct {
	// Accounts are the open accounts by balance, highest first; equal
	// balances by id.
	Accounts []Ranked `json:"accounts"`
}

// Top-accounts read model keys, for open accounts only:
//
//	a/<account id>                            → Ranked (to find the rank key)
//	r/<MaxInt64 - balance, 19 digits>/<id>    → Ranked
//
// Balances are never negative, so MaxInt64 - balance is too and fits 19
// digits; the inverted, fixed-width number makes an ascending scan yield the
// highest balance first, and the id after it breaks ties.
func rankKey(r Ranked) string {
	return fmt.Sprintf("r/%019d/%s", math.MaxInt64-r.Balance, r.ID)
}

func rankedKey(id string) string { return "a/" + id }

// TopAccounts is the projection behind the top-accounts query. Each change
// of a balance moves the account's rank key; closing removes it.
var TopAccounts = actors.Projection{
	Name:   "top-accounts",
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
		var r Ranked
		found, err := tx.GetJSON(rankedKey(id), &r)
		if err != nil {
			return err
		}
		if opened, ok := e.(Opened); ok {
			return setRank(tx, Ranked{ID: id, Owner: opened.Owner})
		}
		if !found {
			return nil // not open: the account commands refuse money events
		}
		if err := tx.Delete(rankKey(r)); err != nil {
			return err
		}
		switch e := e.(type) {
		case Deposited:
			r.Balance += e.Amount
		case Withdrawn:
			r.Balance -= e.Amount
		case Closed:
			return tx.Delete(rankedKey(id))
		}
		if r.Balance < 0 {
			// The account kind never lets this happen; stop the projection
			// rather than rank a broken balance.
			return fmt.Errorf("account %s: balance %d is negative after event %d", id, r.Balance, ev.Sequence)
		}
		return setRank(tx, r)
	},
}

func setRank(tx *actors.Tx, r Ranked) error {
	if err := tx.SetJSON(rankedKey(r.ID), r); err != nil {
		return err
	}
	return tx.SetJSON(rankKey(r), r)
}

// Top-accounts sizes.
const (
	DefaultTopLimit = 10
	MaxTopLimit     = 100
)

// TopParams are the top-accounts query's params.
type TopParams struct {
	// Limit is how many accounts: DefaultTopLimit when 0, at most
	// MaxTopLimit.
	Limit int `json:"limit,omitempty"`
}

// TopAccountsQuery answers {"limit": 10} with a TopPage.
var TopAccountsQuery = actors.Query{
	Name:       "top-accounts",
	Projection: TopAccounts.Name,
	Handle: func(_ context.Context, v *actors.View, params json.RawMessage) (any, error) {
		const q = "top-accounts"
		var p TopParams
		if err := decodeParams(q, params, &p); err != nil {
			return nil, err
		}
		limit, err := pageLimit(q, p.Limit, DefaultTopLimit, MaxTopLimit)
		if err != nil {
			return nil, err
		}
		page := TopPage{Accounts: make([]Ranked, 0, limit)}
		for kv, err := range v.Scan("r/", "", limit) {
			if err != nil {
				return nil, err
			}
			var r Ranked
			if err := json.Unmarshal(kv.Value, &r); err != nil {
				return nil, fmt.Errorf("top-accounts: %q: %w", kv.Key, err)
			}
			page.Accounts = append(page.Accounts, r)
		}
		return page, nil
	},
}
