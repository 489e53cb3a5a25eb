package bank

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/journal"
)

// The large-transfer monitor: a singleton (one instance in the whole
// cluster) that flags every transfer of LargeTransfer or more, once.
//
//   - Transfers tags the Started event of a large transfer with
//     LargeTransferTag, and the alert kind tags its Flagged events with it
//     too; the large-transfers projection follows that tag on every node.
//   - The LargeTransferMonitor singleton reads the projection for large
//     transfers not flagged yet and sends each a Flag command to the alert
//     entity named after the transfer, with the transfer's id as the
//     idempotency key: when the monitor moves to another node (its node
//     stopped or died), the new one may flag a transfer again, which takes
//     effect once.
//   - The "large-transfers" query lists them, flagged or not, with the node
//     and the lease epoch that flagged each.

// LargeTransfer is the amount from which a transfer is flagged.
const LargeTransfer = 10_000

// LargeTransferTag tags the events the large-transfers projection reads.
const LargeTransferTag = "large-transfer"

// AlertKind is the entity kind of alerts; an alert's id is its transfer's.
const AlertKind = "alert"

// Alert is the state of one alert: a flagged large transfer.
type Alert struct {
	Transfer string `json:"transfer"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
	Amount   int64  `json:"amount,omitempty"`
	Flagged  bool   `json:"flagged"`
	// By and Epoch name the node and the monitor's lease epoch that
	// flagged it.
	By    string `json:"by,omitempty"`
	Epoch uint64 `json:"epoch,omitempty"`
}

type (
	// Flag records that a large transfer was seen (the monitor's command;
	// a repeat changes nothing).
	Flag struct {
		From   string `json:"from"`
		To     string `json:"to"`
		Amount int64  `json:"amount"`
		By     string `json:"by"`
		Epoch  uint64 `json:"epoch"`
	}
	// Flagged is Flag's event.
	Flagged Flag
)

// Alerts describes the alert kind. Flag is internal: only the monitor
// (trusted code) sends it.
var Alerts = newAlerts()

func newAlerts() *actors.Kind[Alert] {
	k := actors.NewKind(AlertKind, func(id string) Alert { return Alert{Transfer: id} })
	actors.HandleInternal(k, func(s Alert, c Flag) (actors.Decision, error) {
		if s.Flagged {
			return actors.Decision{Reply: s}, nil
		}
		e := Flagged(c)
		s.From, s.To, s.Amount, s.Flagged, s.By, s.Epoch = c.From, c.To, c.Amount, true, c.By, c.Epoch
		return actors.Decision{Events: []any{e}, Reply: s}, nil
	})
	actors.On(k, func(s Alert, e Flagged) Alert {
		s.From, s.To, s.Amount, s.Flagged, s.By, s.Epoch = e.From, e.To, e.Amount, true, e.By, e.Epoch
		return s
	})
	k.Tags(func(any) []string { return []string{LargeTransferTag} })
	return k
}

// LargeTransfers is the read model of large transfers and their alerts:
// key "t/<transfer>" → Alert.
var LargeTransfers = actors.Projection{
	Name:   "large-transfers",
	Filter: journal.Filter{Tag: LargeTransferTag},
	Apply: func(tx *actors.Tx, ev journal.Event) error {
		kind, id, err := journal.ParseStream(ev.Stream)
		if err != nil {
			return err
		}
		a := Alert{Transfer: id}
		if _, err := tx.GetJSON("t/"+id, &a); err != nil {
			return err
		}
		switch {
		case kind == TransferKind && ev.Type == "Started":
			s, err := decodeEvent[Started](ev.Payload)
			if err != nil {
				return err
			}
			a.From, a.To, a.Amount = s.From, s.To, s.Amount
		case kind == AlertKind && ev.Type == "Flagged":
			f, err := decodeEvent[Flagged](ev.Payload)
			if err != nil {
				return err
			}
			a.Flagged, a.By, a.Epoch = true, f.By, f.Epoch
		default:
			return nil
		}
		return tx.SetJSON("t/"+id, a)
	},
}

// LargeTransfersQuery answers {"flagged": false} (or true, or nothing for
// all) with up to 100 large transfers in transfer id order.
var LargeTransfersQuery = actors.Query{
	Name:       "large-transfers",
	Projection: LargeTransfers.Name,
	Handle: func(_ context.Context, v *actors.View, params json.RawMessage) (any, error) {
		var p struct {
			Flagged *bool `json:"flagged"`
		}
		if err := decodeParams("large-transfers", params, &p); err != nil {
			return nil, err
		}
		out := []Alert{}
		for kv, err := range v.Scan("t/", "", 0) {
			if err != nil {
				return nil, err
			}
			var a Alert
			if err := json.Unmarshal(kv.Value, &a); err != nil {
				return nil, err
			}
			if p.Flagged != nil && a.Flagged != *p.Flagged {
				continue
			}
			if out = append(out, a); len(out) == 100 {
				break
			}
		}
		return out, nil
	},
}

// LargeTransferMonitor is the singleton that flags large transfers:
// every interval it asks this node's large-transfers read model for the
// ones not flagged yet and flags them, naming this node (rt.Node) in each
// flag. Logs go to log (nil: discarded).
func LargeTransferMonitor(rt *actors.Runtime, interval time.Duration, log *slog.Logger) actors.Singleton {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	node := rt.Node()
	return actors.Singleton{Name: "large-transfer-monitor", Run: func(ctx context.Context, epoch uint64) error {
		log.Info("large-transfer monitor running", "epoch", epoch)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			ans, err := rt.Query(ctx, LargeTransfersQuery.Name, json.RawMessage(`{"flagged":false}`), journal.Token{})
			if err == nil {
				for _, a := range ans.Result.([]Alert) {
					cmd, err := actors.NewCommand(AlertKind, a.Transfer, Flag{From: a.From, To: a.To, Amount: a.Amount, By: node, Epoch: epoch})
					if err != nil {
						return err
					}
					cmd.IdempotencyKey = "flag-" + a.Transfer
					out, err := rt.Send(ctx, cmd)
					if err != nil {
						if ctx.Err() != nil {
							return nil
						}
						log.Warn("could not flag a large transfer", "transfer", a.Transfer, "err", err)
						continue
					}
					if !out.Duplicate && len(out.Events) > 0 {
						log.Info("flagged a large transfer", "transfer", a.Transfer, "amount", a.Amount, "from", a.From, "to", a.To, "epoch", epoch)
					}
				}
			} else if !errors.Is(err, context.Canceled) {
				log.Warn("large-transfer monitor: query failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}}
}
