package bank

import (
	"errors"
	"reflect"
	"testing"

	"github.com/troupe-dev/troupe/actors"
)

func TestAccountCommands(t *testing.T) {
	tests := []struct {
		name       string
		given      []any
		when       any
		thenEvents []any
		thenReply  any
		thenReject string
	}{
		{"open a new account", nil, Open{Owner: "ada"}, []any{Opened{Owner: "ada"}}, Reply{0}, ""},
		{"open twice", []any{Opened{}}, Open{}, nil, nil, "account acc-1 is already open"},
		{"deposit", []any{Opened{}}, Deposit{Amount: 100}, []any{Deposited{Amount: 100}}, Reply{100}, ""},
		{"deposit before open", nil, Deposit{Amount: 100}, nil, nil, "account acc-1 is not open"},
		{"deposit zero", []any{Opened{}}, Deposit{Amount: 0}, nil, nil, "deposit amount must be positive, got 0"},
		{"withdraw", []any{Opened{}, Deposited{100}}, Withdraw{Amount: 30}, []any{Withdrawn{Amount: 30}}, Reply{70}, ""},
		{"withdraw over balance", []any{Opened{}, Deposited{100}, Withdrawn{30}}, Withdraw{Amount: 71}, nil, nil, "insufficient funds: balance 70, withdrawal 71"},
		{"withdraw negative", []any{Opened{}, Deposited{100}}, Withdraw{Amount: -5}, nil, nil, "withdrawal amount must be positive, got -5"},
		{"close with money", []any{Opened{}, Deposited{1}}, Close{}, nil, nil, "account acc-1 still holds 1; withdraw it before closing"},
		{"close empty", []any{Opened{}, Deposited{1}, Withdrawn{1}}, Close{}, []any{Closed{}}, Reply{0}, ""},
		{"deposit after close", []any{Opened{}, Closed{}}, Deposit{Amount: 1}, nil, nil, "account acc-1 is closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state, err := Accounts.Apply(Accounts.Initial("acc-1"), tt.given...)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Accounts.Decide(state, tt.when)
			if tt.thenReject != "" {
				var rej *actors.RejectedError
				if !errors.As(err, &rej) || rej.Reason != tt.thenReject {
					t.Fatalf("err = %v, want rejection %q", err, tt.thenReject)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.Events, tt.thenEvents) || !reflect.DeepEqual(d.Reply, tt.thenReply) {
				t.Fatalf("decided %#v reply %#v, want %#v reply %#v", d.Events, d.Reply, tt.thenEvents, tt.thenReply)
			}
		})
	}
}

func TestBalanceFoldsEvents(t *testing.T) {
	s, err := Accounts.Apply(Accounts.Initial("a"), Opened{Owner: "ada"}, Deposited{100}, Withdrawn{30})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Account{ID: "a", Owner: "ada", Open: true, Balance: 70}); s != want {
		t.Fatalf("state %+v, want %+v", s, want)
	}
}
