package bank

import (
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/troupe-dev/troupe/actors/codes"
)

func TestRankKeysSortByBalanceDescendingThenID(t *testing.T) {
	rows := []Ranked{
		{ID: "a", Balance: 0}, {ID: "b", Balance: 1}, {ID: "c", Balance: 9}, {ID: "d", Balance: 10},
		{ID: "e", Balance: 10}, {ID: "e2", Balance: 10}, {ID: "f", Balance: math.MaxInt64}, {ID: "g", Balance: math.MaxInt64 - 1},
	}
	keys := make([]string, len(rows))
	for i, r := range rows {
		keys[i] = rankKey(r)
	}
	sort.Strings(keys)
	var got []string
	for _, k := range keys {
		for _, r := range rows {
			if rankKey(r) == k {
				got = append(got, r.ID)
			}
		}
	}
	if want := "[f g d e e2 c b a]"; fmt.Sprint(got) != want {
		t.Fatalf("order %v, want %s", got, want)
	}
}

func TestTopAccounts(t *testing.T) {
	n := startBank(t)
	read := func(limit int, minPosition uint64) string {
		t.Helper()
		var page TopPage
		query(t, n, "top-accounts", TopParams{Limit: limit}, minPosition, &page)
		var got []string
		for _, r := range page.Accounts {
			if r.Owner != "owner-of-"+r.ID {
				t.Fatalf("row %+v has the wrong owner", r)
			}
			got = append(got, fmt.Sprintf("%s:%d", r.ID, r.Balance))
		}
		return fmt.Sprint(got)
	}
	expect := func(step string, limit int, minPosition uint64, want string) {
		t.Helper()
		if got := read(limit, minPosition); got != want {
			t.Fatalf("%s: top accounts %s, want %s", step, got, want)
		}
	}

	openAccount(t, n, "a", 50)
	openAccount(t, n, "b", 200)
	openAccount(t, n, "c", 50)
	openAccount(t, n, "d", 0)
	last := openAccount(t, n, "e", 120)
	expect("opened", 0, last, "[b:200 e:120 a:50 c:50 d:0]")
	expect("limit", 2, last, "[b:200 e:120]")

	last = send(t, n, Kind, "c", Deposit{Amount: 500}).Position
	expect("a deposit moves c up", 0, last, "[c:550 b:200 e:120 a:50 d:0]")

	last = send(t, n, Kind, "b", Withdraw{Amount: 150}).Position
	expect("a withdrawal moves b down, tied with a", 0, last, "[c:550 e:120 a:50 b:50 d:0]")

	last = send(t, n, Kind, "d", Close{}).Position
	expect("closed d leaves", 0, last, "[c:550 e:120 a:50 b:50]")

	send(t, n, Kind, "e", Withdraw{Amount: 120})
	last = send(t, n, Kind, "e", Close{}).Position
	expect("emptied and closed e leaves", 0, last, "[c:550 a:50 b:50]")

	// Nothing is left behind: a stale rank key would show up here.
	expect("all of them", MaxTopLimit, last, "[c:550 a:50 b:50]")
}

func TestTopAccountsRejectsBadParams(t *testing.T) {
	n := startBank(t)
	var bad *codes.Error
	tests := []struct{ name, params, want string }{
		{"limit over the maximum", `{"limit":101}`, `top-accounts query: "limit" must be between 1 and 100, got 101`},
		{"negative limit", `{"limit":-3}`, `"limit" must be between 1 and 100, got -3`},
		{"limit that is no number", `{"limit":"ten"}`, `top-accounts query: params: "limit": want a whole number, got string`},
		{"unknown field", `{"limit":3,"id":"a"}`, `unknown field "id"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			queryError(t, n, "top-accounts", tt.params, 0, &bad, tt.want)
		})
	}
	var page TopPage
	query(t, n, "top-accounts", nil, 0, &page)
	if page.Accounts == nil || len(page.Accounts) != 0 {
		t.Fatalf("empty bank: %+v, want an empty list", page)
	}
}
