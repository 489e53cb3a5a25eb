package bank

import (
	"strings"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
)

// TransferKind is the entity kind of transfers.
const TransferKind = "transfer"

// Status is where a transfer is in its process.
type Status string

// The statuses of a transfer. Failed, completed and compensated are
// terminal.
//
//	started ─┬─ debited ─┬─ completed
//	         │           └─ refunding ─┬─ compensated
//	         └─ failed ◄───────────────┘ (the refund was rejected)
const (
	// StatusNone is a transfer that was never started.
	StatusNone Status = ""
	// StatusStarted: recorded, nothing moved yet.
	StatusStarted Status = "started"
	// StatusDebited: the amount has left the source account.
	StatusDebited Status = "debited"
	// StatusRefunding: the destination refused the amount; it is being
	// paid back to the source. Recording this before paying back is what
	// makes a crash safe here: a replayed credit could otherwise succeed
	// after the refund (the destination opened meanwhile) and the money
	// would exist twice.
	StatusRefunding Status = "refunding"
	// StatusCompleted: the amount moved from source to destination.
	StatusCompleted Status = "completed"
	// StatusFailed: the debit was rejected; nothing moved. (Or the refund
	// was rejected too; the reason then says where the amount is.)
	StatusFailed Status = "failed"
	// StatusCompensated: the credit was rejected and the source was paid
	// back; nothing moved in the end.
	StatusCompensated Status = "compensated"
)

func (s Status) String() string {
	if s == StatusNone {
		return "not started"
	}
	return string(s)
}

// Terminal reports whether the transfer is over.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCompensated
}

// Transfer is the state of one transfer, and the row the transfer query
// returns.
type Transfer struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
	Status Status `json:"status"`
	// Reason says why a transfer failed or was compensated.
	Reason string `json:"reason"`
}

// Transfer commands. Start is the client's; the others are the transfer
// process's, which records each step's outcome with them.
type (
	// Start records a transfer of Amount from account From to account To.
	Start struct {
		From   string `json:"from"`
		To     string `json:"to"`
		Amount int64  `json:"amount"`
	}
	// MarkDebited records that the amount left the source.
	MarkDebited struct{}
	// Complete records that the amount reached the destination.
	Complete struct{}
	// Fail ends a transfer whose debit (or refund) was rejected.
	Fail struct {
		Reason string `json:"reason"`
	}
	// RejectCredit records that the destination refused the amount, which
	// starts the refund.
	RejectCredit struct {
		Reason string `json:"reason"`
	}
	// Compensate ends a transfer whose amount was paid back to the source.
	Compensate struct {
		Reason string `json:"reason"`
	}
	// Get replies with the transfer's state and changes nothing.
	Get struct{}
)

// Transfer events.
type (
	Started struct {
		From   string `json:"from"`
		To     string `json:"to"`
		Amount int64  `json:"amount"`
	}
	Debited   struct{}
	Completed struct{}
	Failed    struct {
		Reason string `json:"reason"`
	}
	CreditRejected struct {
		Reason string `json:"reason"`
	}
	Compensated struct {
		Reason string `json:"reason"`
	}
)

// Transfers describes the transfer kind. Every command replies with the
// Transfer after it.
var Transfers = newTransfers()

func newTransfers() *actors.Kind[Transfer] {
	k := actors.NewKind(TransferKind, func(id string) Transfer { return Transfer{ID: id} })
	k.Tags(func(ev any) []string {
		if s, ok := ev.(Started); ok && s.Amount >= LargeTransfer {
			return []string{LargeTransferTag}
		}
		return nil
	})
	actors.Handle(k, func(s Transfer, c Start) (actors.Decision, error) {
		switch {
		case s.Status != StatusNone:
			return actors.Decision{}, actors.Reject("transfer %s was already started", s.ID)
		case c.From == "" || c.To == "":
			return actors.Decision{}, actors.Reject("transfer %s needs both accounts, from %q to %q", s.ID, c.From, c.To)
		case c.From == c.To:
			return actors.Decision{}, actors.Reject("transfer %s is from and to the same account %s", s.ID, c.From)
		case c.Amount <= 0:
			return actors.Decision{}, actors.Reject("transfer amount must be positive, got %d", c.Amount)
		}
		// An account id the journal refuses would fail every command of
		// the process with an error that is not a rejection, and the
		// process would retry it for ever; refuse it here.
		for _, id := range []string{c.From, c.To} {
			if _, _, err := journal.ParseStream(journal.StreamID(Kind, id)); err != nil {
				return actors.Decision{}, actors.Reject("transfer %s: account id %q is invalid", s.ID, id)
			}
		}
		return decide(k, s, Started(c))
	})
	actors.HandleInternal(k, func(s Transfer, c MarkDebited) (actors.Decision, error) {
		if err := s.expect(StatusStarted); err != nil {
			return actors.Decision{}, err
		}
		return decide(k, s, Debited{})
	})
	actors.HandleInternal(k, func(s Transfer, c Complete) (actors.Decision, error) {
		if err := s.expect(StatusDebited); err != nil {
			return actors.Decision{}, err
		}
		return decide(k, s, Completed{})
	})
	actors.HandleInternal(k, func(s Transfer, c Fail) (actors.Decision, error) {
		if err := s.expect(StatusStarted, StatusRefunding); err != nil {
			return actors.Decision{}, err
		}
		if c.Reason == "" {
			return actors.Decision{}, actors.Reject("transfer %s: a failure needs a reason", s.ID)
		}
		return decide(k, s, Failed(c))
	})
	actors.HandleInternal(k, func(s Transfer, c RejectCredit) (actors.Decision, error) {
		if err := s.expect(StatusDebited); err != nil {
			return actors.Decision{}, err
		}
		if c.Reason == "" {
			return actors.Decision{}, actors.Reject("transfer %s: a rejected credit needs a reason", s.ID)
		}
		return decide(k, s, CreditRejected(c))
	})
	actors.HandleInternal(k, func(s Transfer, c Compensate) (actors.Decision, error) {
		if err := s.expect(StatusRefunding); err != nil {
			return actors.Decision{}, err
		}
		if c.Reason == "" {
			c.Reason = s.Reason
		}
		return decide(k, s, Compensated(c))
	})
	actors.Handle(k, func(s Transfer, _ Get) (actors.Decision, error) {
		return actors.Decision{Reply: s}, nil
	})
	actors.On(k, func(s Transfer, e Started) Transfer {
		s.From, s.To, s.Amount, s.Status = e.From, e.To, e.Amount, StatusStarted
		return s
	})
	actors.On(k, func(s Transfer, _ Debited) Transfer { s.Status = StatusDebited; return s })
	actors.On(k, func(s Transfer, _ Completed) Transfer { s.Status = StatusCompleted; return s })
	actors.On(k, func(s Transfer, e Failed) Transfer { s.Status, s.Reason = StatusFailed, e.Reason; return s })
	actors.On(k, func(s Transfer, e CreditRejected) Transfer {
		s.Status, s.Reason = StatusRefunding, e.Reason
		return s
	})
	actors.On(k, func(s Transfer, e Compensated) Transfer {
		s.Status, s.Reason = StatusCompensated, e.Reason
		return s
	})
	return k
}

// decide emits one event and replies with the state after it.
func decide(k *actors.Kind[Transfer], s Transfer, ev any) (actors.Decision, error) {
	after, err := k.Apply(s, ev)
	if err != nil {
		return actors.Decision{}, err
	}
	return actors.Decision{Events: []any{ev}, Reply: after}, nil
}

// expect rejects a step the transfer is not ready for.
func (s Transfer) expect(want ...Status) error {
	for _, w := range want {
		if s.Status == w {
			return nil
		}
	}
	if s.Status == StatusNone {
		return actors.Reject("transfer %s was never started", s.ID)
	}
	names := make([]string, len(want))
	for i, w := range want {
		names[i] = w.String()
	}
	return actors.Reject("transfer %s is %s, not %s", s.ID, s.Status, strings.Join(names, " or "))
}
