package bank

import (
	"context"
	"testing"

	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
)

func TestTheMonitorFlagsLargeTransfersOnce(t *testing.T) {
	n := startBank(t)
	openAccount(t, n, "a", 50_000)
	openAccount(t, n, "b", 0)
	send(t, n, TransferKind, "t-small", Start{From: "a", To: "b", Amount: LargeTransfer - 1})
	send(t, n, TransferKind, "t-large", Start{From: "a", To: "b", Amount: LargeTransfer})
	var flagged []Alert
	actorstest.Eventually(t, wait, func() bool {
		if _, err := n.Query(context.Background(), "large-transfers", map[string]bool{"flagged": true}, journal.Token{}, &flagged); err != nil {
			t.Fatal(err)
		}
		return len(flagged) > 0
	})
	want := Alert{Transfer: "t-large", From: "a", To: "b", Amount: LargeTransfer, Flagged: true, By: "local", Epoch: 0}
	if len(flagged) != 1 || flagged[0] != want {
		t.Fatalf("flagged %+v, want only %+v", flagged, want)
	}
	var all []Alert
	if _, err := n.Query(context.Background(), "large-transfers", nil, journal.Token{}, &all); err != nil || len(all) != 1 {
		t.Fatalf("large transfers %+v (%v): the small one is not large", all, err)
	}
	// Flagging again (a new leader repeating the work) changes nothing.
	out := send(t, n, AlertKind, "t-large", Flag{From: "a", To: "b", Amount: LargeTransfer, By: "other", Epoch: 9})
	if len(out.Events) != 0 {
		t.Fatalf("a repeated flag appended %v", out.Events)
	}
	if evs := events(t, n, journal.StreamID(AlertKind, "t-large")); len(evs) != 1 {
		t.Fatalf("alert stream has %d events, want 1", len(evs))
	}
}
