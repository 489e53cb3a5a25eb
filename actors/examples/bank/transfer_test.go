package bank

import (
	"testing"

	"github.com/troupe-dev/troupe/actors/actorstest"
)

func TestTransferCommands(t *testing.T) {
	started := []any{Started{From: "a", To: "b", Amount: 50}}
	debited := append(started[:1:1], Debited{})
	refunding := append(debited[:2:2], CreditRejected{Reason: "credit of b rejected: account b is closed"})
	completed := append(debited[:2:2], Completed{})
	failed := append(started[:1:1], Failed{Reason: "no"})
	compensated := append(refunding[:3:3], Compensated{Reason: "credit of b rejected: account b is closed"})
	at := func(st Status, reason string) Transfer {
		return Transfer{ID: "t-1", From: "a", To: "b", Amount: 50, Status: st, Reason: reason}
	}
	runScenarios(t, Transfers, "t-1", []scenario{
		{name: "start", when: Start{From: "a", To: "b", Amount: 50}, events: started, reply: at(StatusStarted, "")},
		{name: "start twice", given: started, when: Start{From: "a", To: "b", Amount: 50}, reject: "transfer t-1 was already started"},
		{name: "start again after it failed", given: failed, when: Start{From: "a", To: "b", Amount: 5}, reject: "transfer t-1 was already started"},
		{name: "start without a source", when: Start{To: "b", Amount: 50}, reject: `transfer t-1 needs both accounts, from "" to "b"`},
		{name: "start without a destination", when: Start{From: "a", Amount: 50}, reject: `transfer t-1 needs both accounts, from "a" to ""`},
		{name: "start to the same account", when: Start{From: "a", To: "a", Amount: 50}, reject: "transfer t-1 is from and to the same account a"},
		{name: "start with zero", when: Start{From: "a", To: "b"}, reject: "transfer amount must be positive, got 0"},
		{name: "start with a negative amount", when: Start{From: "a", To: "b", Amount: -3}, reject: "transfer amount must be positive, got -3"},
		{name: "start with an invalid account id", when: Start{From: "a", To: "b\x00", Amount: 1}, reject: `transfer t-1: account id "b\x00" is invalid`},

		{name: "mark debited", given: started, when: MarkDebited{}, events: []any{Debited{}}, reply: at(StatusDebited, "")},
		{name: "mark debited before start", when: MarkDebited{}, reject: "transfer t-1 was never started"},
		{name: "mark debited twice", given: debited, when: MarkDebited{}, reject: "transfer t-1 is debited, not started"},
		{name: "mark a failed transfer debited", given: failed, when: MarkDebited{}, reject: "transfer t-1 is failed, not started"},

		{name: "complete", given: debited, when: Complete{}, events: []any{Completed{}}, reply: at(StatusCompleted, "")},
		{name: "complete before the debit", given: started, when: Complete{}, reject: "transfer t-1 is started, not debited"},
		{name: "complete twice", given: completed, when: Complete{}, reject: "transfer t-1 is completed, not debited"},
		{name: "complete while refunding", given: refunding, when: Complete{}, reject: "transfer t-1 is refunding, not debited"},

		{name: "fail a started transfer", given: started, when: Fail{Reason: "no"}, events: []any{Failed{Reason: "no"}}, reply: at(StatusFailed, "no")},
		{name: "fail a refund", given: refunding, when: Fail{Reason: "refund rejected"}, events: []any{Failed{Reason: "refund rejected"}}, reply: at(StatusFailed, "refund rejected")},
		{name: "fail without a reason", given: started, when: Fail{}, reject: "transfer t-1: a failure needs a reason"},
		{name: "fail a debited transfer", given: debited, when: Fail{Reason: "no"}, reject: "transfer t-1 is debited, not started or refunding"},
		{name: "fail a completed transfer", given: completed, when: Fail{Reason: "no"}, reject: "transfer t-1 is completed, not started or refunding"},
		{name: "fail before start", when: Fail{Reason: "no"}, reject: "transfer t-1 was never started"},

		{name: "reject the credit", given: debited, when: RejectCredit{Reason: "closed"}, events: []any{CreditRejected{Reason: "closed"}}, reply: at(StatusRefunding, "closed")},
		{name: "reject the credit before the debit", given: started, when: RejectCredit{Reason: "closed"}, reject: "transfer t-1 is started, not debited"},
		{name: "reject the credit without a reason", given: debited, when: RejectCredit{}, reject: "transfer t-1: a rejected credit needs a reason"},

		{name: "compensate", given: refunding, when: Compensate{Reason: "paid back"}, events: []any{Compensated{Reason: "paid back"}}, reply: at(StatusCompensated, "paid back")},
		{name: "compensate keeps the reason of the rejected credit", given: refunding, when: Compensate{},
			events: []any{Compensated{Reason: "credit of b rejected: account b is closed"}},
			reply:  at(StatusCompensated, "credit of b rejected: account b is closed")},
		{name: "compensate a debited transfer", given: debited, when: Compensate{Reason: "x"}, reject: "transfer t-1 is debited, not refunding"},
		{name: "compensate twice", given: compensated, when: Compensate{Reason: "x"}, reject: "transfer t-1 is compensated, not refunding"},

		{name: "get", given: refunding, when: Get{}, reply: at(StatusRefunding, "credit of b rejected: account b is closed")},
		{name: "get an unknown transfer", when: Get{}, reply: Transfer{ID: "t-1"}},
	})
}

func TestTransferStatus(t *testing.T) {
	tests := []struct {
		name     string
		events   []any
		status   Status
		terminal bool
	}{
		{"none", nil, StatusNone, false},
		{"started", []any{Started{From: "a", To: "b", Amount: 1}}, StatusStarted, false},
		{"debited", []any{Started{From: "a", To: "b", Amount: 1}, Debited{}}, StatusDebited, false},
		{"completed", []any{Started{From: "a", To: "b", Amount: 1}, Debited{}, Completed{}}, StatusCompleted, true},
		{"failed", []any{Started{From: "a", To: "b", Amount: 1}, Failed{Reason: "x"}}, StatusFailed, true},
		{"refunding", []any{Started{From: "a", To: "b", Amount: 1}, Debited{}, CreditRejected{Reason: "x"}}, StatusRefunding, false},
		{"compensated", []any{Started{From: "a", To: "b", Amount: 1}, Debited{}, CreditRejected{Reason: "x"}, Compensated{Reason: "x"}}, StatusCompensated, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := actorstest.Given(Transfers, "t-1", tt.events...).State()
			if s.Status != tt.status || s.Status.Terminal() != tt.terminal {
				t.Fatalf("status %q (terminal %v), want %q (terminal %v)", s.Status, s.Status.Terminal(), tt.status, tt.terminal)
			}
		})
	}
	if StatusNone.String() != "not started" || StatusDebited.String() != "debited" {
		t.Fatalf("String: %q, %q", StatusNone.String(), StatusDebited.String())
	}
}
