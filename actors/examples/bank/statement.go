package bank

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
)

// Entry is one line of an account's statement: one money event.
type Entry struct {
	// Sequence is the event's sequence in the account's stream; it is
	// also what the page cursors count.
	Sequence uint64 `json:"sequence"`
	// Position is the event's global position.
	Position uint64    `json:"position"`
	Time     time.Time `json:"time"`
	// Type is the event type: Opened, Deposited, Withdrawn or Closed.
	Type string `json:"type"`
	// Amount is signed: positive for a deposit, negative for a
	// withdrawal, zero for opening and closing.
	Amount int64 `json:"amount"`
	// Balance is the balance after the event.
	Balance int64 `json:"balance"`
	// Ref is the deposit's or withdrawal's reference, if any (a transfer
	// leg such as "t-1/debit").
	Ref string `json:"ref,omitempty"`
}

// StatementPage is the statement query's result.
type StatementPage struct {
	Entries []Entry `json:"entries"`
	// Next is the cursor to pass as "after" for the next page; empty when
	// this page is the last.
	Next string `json:"next"`
}

// Statement read model keys:
//
//	e/<account id> 0x00 <sequence, 20 digits>  → Entry
//	h/<account id>                             → statementHead
//
// Account ids hold no NUL byte (journal.ParseStream), so the NUL ends an id
// and one account's prefix never covers another's ("a" vs "a/b"); the
// fixed-width sequence makes keys sort by sequence.
func entryPrefix(id string) string { return "e/" + id + "\x00" }

func entryKey(id string, seq uint64) string { return fmt.Sprintf("%s%020d", entryPrefix(id), seq) }

func headKey(id string) string { return "h/" + id }

// statementHead is the running balance of one account's statement.
type statementHead struct {
	Balance int64 `json:"balance"`
}

// Statements is the projection behind the statement query.
var Statements = actors.Projection{
	Name:   "statement",
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
		var head statementHead
		if _, err := tx.GetJSON(headKey(id), &head); err != nil {
			return err
		}
		en := Entry{Sequence: ev.Sequence, Position: ev.Position, Time: ev.Time, Type: ev.Type}
		switch e := e.(type) {
		case Deposited:
			en.Amount, en.Ref = e.Amount, e.Ref
		case Withdrawn:
			en.Amount, en.Ref = -e.Amount, e.Ref
		}
		head.Balance += en.Amount
		en.Balance = head.Balance
		if err := tx.SetJSON(entryKey(id, ev.Sequence), en); err != nil {
			return err
		}
		return tx.SetJSON(headKey(id), head)
	},
}

// Statement page sizes.
const (
	DefaultStatementLimit = 20
	MaxStatementLimit     = 100
)

// StatementParams are the statement query's params.
type StatementParams struct {
	// ID is the account (required).
	ID string `json:"id"`
	// After is the cursor of the page to read: "" for the first page,
	// then the previous page's Next.
	// A number is accepted too (Cursor).
	After Cursor `json:"after,omitempty"`
	// Limit is the page size: DefaultStatementLimit when 0, at most
	// MaxStatementLimit.
	Limit int `json:"limit,omitempty"`
}

// StatementQuery answers {"id": "acc-1", "after": "20", "limit": 20} with a
// StatementPage: the account's entries in sequence order after the cursor.
var StatementQuery = actors.Query{
	Name:       "statement",
	Projection: Statements.Name,
	Handle: func(_ context.Context, v *actors.View, params json.RawMessage) (any, error) {
		const q = "statement"
		var p StatementParams
		if err := decodeParams(q, params, &p); err != nil {
			return nil, err
		}
		if p.ID == "" {
			return nil, badParams(q, `missing "id"`)
		}
		limit, err := pageLimit(q, p.Limit, DefaultStatementLimit, MaxStatementLimit)
		if err != nil {
			return nil, err
		}
		after := ""
		if p.After != "" {
			// A cursor is the sequence of the last entry read, in decimal.
			seq, err := strconv.ParseUint(string(p.After), 10, 64)
			if err != nil {
				return nil, badParams(q, `"after" must be the "next" of a previous page, got %q`, p.After)
			}
			after = entryKey(p.ID, seq)
		}
		if _, ok, err := v.Get(headKey(p.ID)); err != nil {
			return nil, err
		} else if !ok {
			return nil, actors.NotFound("account %q", p.ID)
		}
		page := StatementPage{Entries: make([]Entry, 0, limit)}
		// One entry more than the page tells whether another page follows.
		for kv, err := range v.Scan(entryPrefix(p.ID), after, limit+1) {
			if err != nil {
				return nil, err
			}
			if len(page.Entries) == limit {
				page.Next = strconv.FormatUint(page.Entries[limit-1].Sequence, 10)
				break
			}
			var en Entry
			if err := json.Unmarshal(kv.Value, &en); err != nil {
				return nil, fmt.Errorf("statement of %q: entry %q: %w", p.ID, kv.Key, err)
			}
			page.Entries = append(page.Entries, en)
		}
		return page, nil
	},
}
