package bank

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
)

// TransferProcessName names the transfer process's reactor (and its
// checkpoint).
const TransferProcessName = "transfer-process"

// sendTimeout bounds one command of the process, so that a stuck entity
// turns into a retry of the event rather than a stuck process.
const sendTimeout = 10 * time.Second

// faultFunc, when set (by tests), runs after each step of the transfer
// process that succeeded. An error from it ends the reaction there, as a
// crash would: the checkpoint does not advance and the event is handled
// again.
type faultFunc func(ctx context.Context, transfer, step string) error

// process is the transfer process manager.
type process struct {
	rt    *actors.Runtime
	fault faultFunc
}

// TransferProcess returns the reactor that drives the transfers of rt
// (Register registers it). It reacts to a transfer's events, one at a time:
//
//   - Started: withdraw the amount from the source (ref and idempotency key
//     "<id>/debit"), then MarkDebited; if the account rejects the
//     withdrawal, Fail with its reason.
//   - Debited: deposit the amount to the destination ("<id>/credit"), then
//     Complete; if the account rejects it, RejectCredit.
//   - CreditRejected: deposit the amount back to the source
//     ("<id>/refund"), then Compensate; if even that is rejected (the
//     source was closed meanwhile), Fail, with a reason that says the
//     transfer holds the amount.
//
// A rejection is an outcome, recorded on the transfer; any other error is
// returned and the event is handled again later. The reactor's checkpoint
// advances after each event, so a crash repeats at most the event in hand,
// and three rules make a repeat change nothing twice:
//
//  1. Before acting on an event, the process reads the transfer (Get); if
//     the transfer has moved past the status the event set, the event was
//     handled before and is skipped. So a withdrawal rejected and recorded
//     as Failed is not tried again, and succeed, once the source has money.
//  2. Each deposit and withdrawal carries an idempotency key: the runtime
//     answers a repeated key with the first reply before the handler runs,
//     so a repeat succeeds without effect even if the account would now
//     refuse it (the balance went down, the destination was closed). It
//     also carries a ref, which shows in the statement and which the
//     account remembers for its recent operations (see Account.Refs), for
//     callers that send no key.
//  3. The refund is recorded as its own step (CreditRejected) before it is
//     paid, so a repeat never tries the credit again after the refund.
//
// Every command also carries an idempotency key derived from the transfer
// and the step, as the actors package asks of reactors.
func TransferProcess(rt *actors.Runtime) actors.Reactor {
	return (&process{rt: rt}).reactor()
}

func (p *process) reactor() actors.Reactor {
	return actors.Reactor{
		Name:   TransferProcessName,
		Filter: journal.Filter{Kind: TransferKind},
		React:  p.react,
	}
}

// acting maps the event types the process acts on to the status each sets.
var acting = map[string]Status{
	"Started":        StatusStarted,
	"Debited":        StatusDebited,
	"CreditRejected": StatusRefunding,
}

func (p *process) react(ctx context.Context, ev journal.Event) error {
	status, ok := acting[ev.Type]
	if !ok {
		return nil
	}
	_, id, err := journal.ParseStream(ev.Stream)
	if err != nil {
		return err
	}
	t, err := p.get(ctx, id)
	if err != nil {
		return err
	}
	if t.Status != status {
		return nil // handled before the checkpoint last advanced (rule 1)
	}
	switch status {
	case StatusStarted:
		return p.debit(ctx, t)
	case StatusDebited:
		return p.credit(ctx, t)
	default:
		return p.refund(ctx, t)
	}
}

func (p *process) debit(ctx context.Context, t Transfer) error {
	ref := t.ID + "/debit"
	err := p.send(ctx, Kind, t.From, ref, Withdraw{Amount: t.Amount, Ref: ref})
	if rej := rejection(err); rej != nil {
		return p.record(ctx, t, "failed", Fail{Reason: fmt.Sprintf("debit of %s rejected: %s", t.From, rej.Reason)})
	}
	if err != nil {
		return err
	}
	if err := p.step(ctx, t.ID, "debit"); err != nil {
		return err
	}
	return p.record(ctx, t, "debited", MarkDebited{})
}

func (p *process) credit(ctx context.Context, t Transfer) error {
	ref := t.ID + "/credit"
	err := p.send(ctx, Kind, t.To, ref, Deposit{Amount: t.Amount, Ref: ref})
	if rej := rejection(err); rej != nil {
		return p.record(ctx, t, "credit-rejected", RejectCredit{Reason: fmt.Sprintf("credit of %s rejected: %s", t.To, rej.Reason)})
	}
	if err != nil {
		return err
	}
	if err := p.step(ctx, t.ID, "credit"); err != nil {
		return err
	}
	return p.record(ctx, t, "completed", Complete{})
}

func (p *process) refund(ctx context.Context, t Transfer) error {
	ref := t.ID + "/refund"
	err := p.send(ctx, Kind, t.From, ref, Deposit{Amount: t.Amount, Ref: ref})
	if rej := rejection(err); rej != nil {
		reason := fmt.Sprintf("%s; refund to %s rejected: %s; transfer %s holds %d", t.Reason, t.From, rej.Reason, t.ID, t.Amount)
		return p.record(ctx, t, "failed", Fail{Reason: reason})
	}
	if err != nil {
		return err
	}
	if err := p.step(ctx, t.ID, "refund"); err != nil {
		return err
	}
	return p.record(ctx, t, "compensated", Compensate{Reason: t.Reason})
}

// record sends a step's outcome to the transfer. A rejection here means the
// transfer is not where the process thought (someone else sent it a
// command); returning it retries the event, and rule 1 then sorts it out.
func (p *process) record(ctx context.Context, t Transfer, step string, cmd any) error {
	if err := p.send(ctx, TransferKind, t.ID, t.ID+"/"+step, cmd); err != nil {
		return err
	}
	return p.step(ctx, t.ID, step)
}

// get reads a transfer's state from the entity itself, which, unlike the
// transfers read model, is never behind. Get appends nothing, so it needs
// no idempotency key.
func (p *process) get(ctx context.Context, id string) (Transfer, error) {
	out, err := p.sendOutcome(ctx, TransferKind, id, "", Get{})
	if err != nil {
		return Transfer{}, err
	}
	var t Transfer
	if err := json.Unmarshal(out.Reply, &t); err != nil {
		return Transfer{}, fmt.Errorf("transfer %s: Get reply: %w", id, err)
	}
	return t, nil
}

func (p *process) send(ctx context.Context, kind, id, key string, cmd any) error {
	_, err := p.sendOutcome(ctx, kind, id, key, cmd)
	return err
}

func (p *process) sendOutcome(ctx context.Context, kind, id, key string, cmd any) (*actors.Outcome, error) {
	c, err := actors.NewCommand(kind, id, cmd)
	if err != nil {
		return nil, err
	}
	c.IdempotencyKey = key
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	out, err := p.rt.Send(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", c.GetType(), kind, id, err)
	}
	return out, nil
}

func (p *process) step(ctx context.Context, transfer, step string) error {
	if p.fault == nil {
		return nil
	}
	return p.fault(ctx, transfer, step)
}

func rejection(err error) *actors.RejectedError {
	var rej *actors.RejectedError
	if errors.As(err, &rej) {
		return rej
	}
	return nil
}

// transferEvent decodes a transfer event of the global log; ok is false for
// types that are not the transfer's own.
func transferEvent(ev journal.Event) (e any, ok bool, err error) {
	switch ev.Type {
	case "Started":
		e, err = decodeEvent[Started](ev.Payload)
	case "Debited":
		e = Debited{}
	case "Completed":
		e = Completed{}
	case "Failed":
		e, err = decodeEvent[Failed](ev.Payload)
	case "CreditRejected":
		e, err = decodeEvent[CreditRejected](ev.Payload)
	case "Compensated":
		e, err = decodeEvent[Compensated](ev.Payload)
	default:
		return nil, false, nil
	}
	return e, err == nil, err
}

// TransferStates is the projection behind the transfer query: each
// transfer's Transfer, folded with the kind's own appliers.
var TransferStates = actors.Projection{
	Name:   "transfers",
	Filter: journal.Filter{Kind: TransferKind},
	Apply: func(tx *actors.Tx, ev journal.Event) error {
		_, id, err := journal.ParseStream(ev.Stream)
		if err != nil {
			return err
		}
		e, ok, err := transferEvent(ev)
		if !ok {
			return err
		}
		t := Transfers.Initial(id)
		if _, err := tx.GetJSON(id, &t); err != nil {
			return err
		}
		if t, err = Transfers.Apply(t, e); err != nil {
			return err
		}
		return tx.SetJSON(id, t)
	},
}

// TransferQuery answers {"id": "t-1"} with that transfer's Transfer.
var TransferQuery = actors.Query{
	Name:       "transfer",
	Projection: TransferStates.Name,
	Handle: func(_ context.Context, v *actors.View, params json.RawMessage) (any, error) {
		const q = "transfer"
		var p struct {
			ID string `json:"id"`
		}
		if err := decodeParams(q, params, &p); err != nil {
			return nil, err
		}
		if p.ID == "" {
			return nil, badParams(q, `missing "id"`)
		}
		var t Transfer
		ok, err := v.GetJSON(p.ID, &t)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, actors.NotFound("transfer %q", p.ID)
		}
		return t, nil
	},
}
