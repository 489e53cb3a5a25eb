package bank

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/codes"
)

func TestStatementKeysSortBySequence(t *testing.T) {
	seqs := []uint64{1, 2, 9, 10, 99, 100, 1 << 40, ^uint64(0)}
	for i := 1; i < len(seqs); i++ {
		a, b := entryKey("acc-1", seqs[i-1]), entryKey("acc-1", seqs[i])
		if a >= b {
			t.Fatalf("key of %d (%q) does not sort before key of %d (%q)", seqs[i-1], a, seqs[i], b)
		}
	}
	// One account's prefix covers none of another's keys.
	for _, other := range []string{"acc-10", "acc-1/x", "acc-"} {
		if k := entryKey(other, 1); strings.HasPrefix(k, entryPrefix("acc-1")) {
			t.Fatalf("entry %q of %q has the prefix of acc-1", k, other)
		}
	}
}

func TestStatementPages(t *testing.T) {
	n := startBank(t)
	// 45 entries: Opened, then 22 deposits and 22 withdrawals, interleaved.
	send(t, n, Kind, "acc-1", Open{Owner: "ada"})
	var last uint64
	for i := 1; i <= 22; i++ {
		send(t, n, Kind, "acc-1", Deposit{Amount: int64(100 + i)})
		last = send(t, n, Kind, "acc-1", Withdraw{Amount: int64(i)}).Position
	}
	// Another account interleaved in the log must not show up.
	openAccount(t, n, "acc-10", 5)

	for _, limit := range []int{20, 15, 100, 1} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			var all []Entry
			var sizes []int
			after := ""
			for pages := 0; ; pages++ {
				if pages > 50 {
					t.Fatalf("more than 50 pages; cursor %q", after)
				}
				var page StatementPage
				query(t, n, "statement", StatementParams{ID: "acc-1", After: Cursor(after), Limit: limit}, last, &page)
				all = append(all, page.Entries...)
				sizes = append(sizes, len(page.Entries))
				if page.Next == "" {
					break
				}
				if len(page.Entries) != limit {
					t.Fatalf("page %d has %d entries and a next cursor, want %d", pages, len(page.Entries), limit)
				}
				after = page.Next
			}
			if len(all) != 45 || sizes[len(sizes)-1] == 0 {
				t.Fatalf("read %d entries in pages %v, want 45 and no empty last page", len(all), sizes)
			}
			checkStatement(t, all)
		})
	}

	t.Run("default limit", func(t *testing.T) {
		var page StatementPage
		query(t, n, "statement", map[string]string{"id": "acc-1"}, last, &page)
		if len(page.Entries) != DefaultStatementLimit || page.Next != "20" {
			t.Fatalf("%d entries, next %q; want %d and \"20\"", len(page.Entries), page.Next, DefaultStatementLimit)
		}
	})
	t.Run("after the last entry", func(t *testing.T) {
		var page StatementPage
		query(t, n, "statement", StatementParams{ID: "acc-1", After: "45"}, last, &page)
		if len(page.Entries) != 0 || page.Next != "" || page.Entries == nil {
			t.Fatalf("page %+v, want no entries (an empty list) and no cursor", page)
		}
	})
}

// checkStatement checks a whole statement: every sequence once and in
// order, and each balance the previous one plus the signed amount.
func checkStatement(t *testing.T, all []Entry) {
	t.Helper()
	var balance int64
	for i, e := range all {
		if e.Sequence != uint64(i+1) {
			t.Fatalf("entry %d has sequence %d: missing or repeated entries", i, e.Sequence)
		}
		if i > 0 && e.Position <= all[i-1].Position {
			t.Fatalf("entry %d at position %d, not after %d", i, e.Position, all[i-1].Position)
		}
		if e.Time.IsZero() {
			t.Fatalf("entry %d has no time", i)
		}
		var wantType string
		var wantAmount int64
		switch k := (i + 1) / 2; {
		case i == 0:
			wantType = "Opened"
		case i%2 == 1:
			wantType, wantAmount = "Deposited", int64(100+k)
		default:
			wantType, wantAmount = "Withdrawn", -int64(k)
		}
		balance += wantAmount
		if e.Type != wantType || e.Amount != wantAmount || e.Balance != balance {
			t.Fatalf("entry %d: %+v, want %s of %d leaving %d", i, e, wantType, wantAmount, balance)
		}
	}
}

func TestStatementOfAClosedAccount(t *testing.T) {
	n := startBank(t)
	send(t, n, Kind, "acc-1", Open{})
	send(t, n, Kind, "acc-1", Deposit{Amount: 10})
	send(t, n, Kind, "acc-1", Withdraw{Amount: 10})
	last := send(t, n, Kind, "acc-1", Close{}).Position
	var page StatementPage
	query(t, n, "statement", StatementParams{ID: "acc-1"}, last, &page)
	var got []string
	for _, e := range page.Entries {
		got = append(got, fmt.Sprintf("%d %s %d %d", e.Sequence, e.Type, e.Amount, e.Balance))
	}
	want := []string{"1 Opened 0 0", "2 Deposited 10 10", "3 Withdrawn -10 0", "4 Closed 0 0"}
	if fmt.Sprint(got) != fmt.Sprint(want) || page.Next != "" {
		t.Fatalf("statement %q next %q, want %q and no next", got, page.Next, want)
	}
}

func TestStatementRejectsBadParams(t *testing.T) {
	n := startBank(t)
	last := openAccount(t, n, "acc-1", 10)
	var bad *codes.Error
	var nf *actors.NotFoundError
	tests := []struct {
		name, params string
		wantType     any
		want         string
	}{
		{"no id", `{}`, &bad, `statement query: missing "id"`},
		{"limit over the maximum", `{"id":"acc-1","limit":101}`, &bad, `statement query: "limit" must be between 1 and 100, got 101`},
		{"negative limit", `{"id":"acc-1","limit":-1}`, &bad, `"limit" must be between 1 and 100, got -1`},
		{"cursor that is no number", `{"id":"acc-1","after":"abc"}`, &bad, `statement query: "after" must be the "next" of a previous page, got "abc"`},
		{"negative cursor", `{"id":"acc-1","after":"-1"}`, &bad, `"after" must be the "next" of a previous page, got "-1"`},
		{"negative cursor as a number", `{"id":"acc-1","after":-1}`, &bad, `statement query: params: "after": want a string, got number -1`},
		{"cursor as a fraction", `{"id":"acc-1","after":1.5}`, &bad, `"after": want a string, got number 1.5`},
		{"unknown field", `{"id":"acc-1","limt":5}`, &bad, `unknown field "limt"`},
		{"not an object", `[1]`, &bad, "statement query: params: want an object, got array"},
		{"trailing data", `{"id":"acc-1"} {}`, &bad, "trailing data"},
		{"unknown account", `{"id":"zzz"}`, &nf, `account "zzz" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			queryError(t, n, "statement", tt.params, last, tt.wantType, tt.want)
		})
	}
}

// TestStatementCursorAsNumber: "next" is a decimal string, and clients
// copy it as a number; "after" takes both and reads the same page.
func TestStatementCursorAsNumber(t *testing.T) {
	n := startBank(t)
	last := openAccount(t, n, "acc-1", 10)
	var first StatementPage
	query(t, n, "statement", StatementParams{ID: "acc-1", Limit: 1}, last, &first)
	if first.Next == "" {
		t.Fatalf("first page %+v has no next", first)
	}
	num, err := strconv.ParseUint(first.Next, 10, 64)
	if err != nil {
		t.Fatalf("next %q is not decimal: %v", first.Next, err)
	}
	var byString, byNumber StatementPage
	query(t, n, "statement", map[string]any{"id": "acc-1", "after": first.Next, "limit": 1}, last, &byString)
	query(t, n, "statement", map[string]any{"id": "acc-1", "after": num, "limit": 1}, last, &byNumber)
	if len(byString.Entries) != 1 || !reflect.DeepEqual(byString, byNumber) {
		t.Fatalf("after as a string: %+v; as a number: %+v", byString, byNumber)
	}
}
