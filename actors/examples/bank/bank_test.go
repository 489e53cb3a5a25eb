package bank

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scenario is one given/when/then case of a kind's pure logic. With reject
// set, the command must be rejected with exactly that reason.
type scenario struct {
	name   string
	given  []any
	when   any
	events []any
	reply  any
	reject string
}

func runScenarios[S any](t *testing.T, k *actors.Kind[S], id string, tests []scenario) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			then := actorstest.Given(k, id, tt.given...).When(tt.when)
			if tt.reject == "" {
				then.ThenEvents(t, tt.events...).ThenReply(t, tt.reply)
				return
			}
			then.ThenRejected(t, tt.reject)
			var rej *actors.RejectedError
			if _, err := then.Decision(); !errors.As(err, &rej) || rej.Reason != tt.reject {
				t.Fatalf("rejected with %v, want exactly %q", err, tt.reject)
			}
		})
	}
}

func TestAccountCommands(t *testing.T) {
	opened := []any{Opened{Owner: "ada"}}
	funded := []any{Opened{}, Deposited{Amount: 100}, Withdrawn{Amount: 30}} // balance 70
	runScenarios(t, Accounts, "acc-1", []scenario{
		{name: "open a new account", when: Open{Owner: "ada"}, events: []any{Opened{Owner: "ada"}}, reply: Reply{0}},
		{name: "open twice", given: opened, when: Open{}, reject: "account acc-1 is already open"},
		{name: "open a closed account", given: []any{Opened{}, Closed{}}, when: Open{}, reject: "account acc-1 is closed"},
		{name: "deposit", given: opened, when: Deposit{Amount: 100}, events: []any{Deposited{Amount: 100}}, reply: Reply{100}},
		{name: "deposit before open", when: Deposit{Amount: 100}, reject: "account acc-1 is not open"},
		{name: "deposit zero", given: opened, when: Deposit{Amount: 0}, reject: "deposit amount must be positive, got 0"},
		{name: "deposit negative", given: opened, when: Deposit{Amount: -1}, reject: "deposit amount must be positive, got -1"},
		{name: "deposit that would overflow", given: funded, when: Deposit{Amount: math.MaxInt64 - 69}, reject: "deposit of 9223372036854775738 would overflow the balance 70"},
		{name: "deposit up to the largest balance", given: funded, when: Deposit{Amount: math.MaxInt64 - 70}, events: []any{Deposited{Amount: math.MaxInt64 - 70}}, reply: Reply{math.MaxInt64}},
		{name: "deposit after close", given: []any{Opened{}, Closed{}}, when: Deposit{Amount: 1}, reject: "account acc-1 is closed"},
		{name: "withdraw", given: []any{Opened{}, Deposited{Amount: 100}}, when: Withdraw{Amount: 30}, events: []any{Withdrawn{Amount: 30}}, reply: Reply{70}},
		{name: "withdraw all", given: funded, when: Withdraw{Amount: 70}, events: []any{Withdrawn{Amount: 70}}, reply: Reply{0}},
		{name: "withdraw over balance", given: funded, when: Withdraw{Amount: 71}, reject: "insufficient funds: balance 70, withdrawal 71"},
		{name: "withdraw negative", given: funded, when: Withdraw{Amount: -5}, reject: "withdrawal amount must be positive, got -5"},
		{name: "withdraw before open", when: Withdraw{Amount: 5}, reject: "account acc-1 is not open"},
		{name: "withdraw after close", given: []any{Opened{}, Closed{}}, when: Withdraw{Amount: 5}, reject: "account acc-1 is closed"},
		{name: "close with money", given: []any{Opened{}, Deposited{Amount: 1}}, when: Close{}, reject: "account acc-1 still holds 1; withdraw it before closing"},
		{name: "close empty", given: []any{Opened{}, Deposited{Amount: 1}, Withdrawn{Amount: 1}}, when: Close{}, events: []any{Closed{}}, reply: Reply{0}},
		{name: "close before open", when: Close{}, reject: "account acc-1 is not open"},
		{name: "close twice", given: []any{Opened{}, Closed{}}, when: Close{}, reject: "account acc-1 is closed"},

		// Refs: an applied ref is a no-op success, whatever the state now.
		{name: "deposit with a ref", given: funded, when: Deposit{Amount: 5, Ref: "t-1/credit"}, events: []any{Deposited{Amount: 5, Ref: "t-1/credit"}}, reply: Reply{75}},
		{name: "withdraw with a ref", given: funded, when: Withdraw{Amount: 5, Ref: "t-1/debit"}, events: []any{Withdrawn{Amount: 5, Ref: "t-1/debit"}}, reply: Reply{65}},
		{name: "repeated withdrawal the balance no longer covers",
			given: []any{Opened{}, Deposited{Amount: 100}, Withdrawn{Amount: 80, Ref: "t-1/debit"}},
			when:  Withdraw{Amount: 80, Ref: "t-1/debit"}, reply: Reply{20}},
		{name: "repeated deposit to a closed account",
			given: []any{Opened{}, Deposited{Amount: 30, Ref: "t-1/credit"}, Withdrawn{Amount: 30}, Closed{}},
			when:  Deposit{Amount: 30, Ref: "t-1/credit"}, reply: Reply{0}},
		{name: "a new ref is judged as usual",
			given: []any{Opened{}, Deposited{Amount: 100}, Withdrawn{Amount: 80, Ref: "t-1/debit"}},
			when:  Withdraw{Amount: 80, Ref: "t-2/debit"}, reject: "insufficient funds: balance 20, withdrawal 80"},
	})
}

func TestAccountFoldsEvents(t *testing.T) {
	s := actorstest.Given(Accounts, "a", Opened{Owner: "ada"}, Deposited{Amount: 100}, Withdrawn{Amount: 30, Ref: "t-1/debit"}).State()
	want := Account{ID: "a", Owner: "ada", Open: true, Balance: 70, Refs: map[string]bool{"t-1/debit": true}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("state %+v, want %+v", s, want)
	}
	s = actorstest.Given(Accounts, "a", Opened{}, Closed{}).State()
	if want := (Account{ID: "a", Closed: true}); !reflect.DeepEqual(s, want) {
		t.Fatalf("state %+v, want %+v", s, want)
	}
}

// The helpers below drive an in-process node.

const wait = 10 * time.Second

func startBank(t *testing.T) *actorstest.Node {
	t.Helper()
	return actorstest.Start(t, actorstest.Config{Setup: Register})
}

// send sends a command that must succeed and returns its outcome.
func send(t *testing.T, n *actorstest.Node, kind, id string, cmd any) *actors.Outcome {
	t.Helper()
	out, err := n.Send(context.Background(), kind, id, cmd)
	if err != nil {
		t.Fatalf("%s/%s %T: %v", kind, id, cmd, err)
	}
	return out
}

// openAccount opens id with a first deposit (none when zero) and returns
// the global position of its last event.
func openAccount(t *testing.T, n *actorstest.Node, id string, amount int64) uint64 {
	t.Helper()
	out := send(t, n, Kind, id, Open{Owner: "owner-of-" + id})
	if amount > 0 {
		out = send(t, n, Kind, id, Deposit{Amount: amount})
	}
	return out.Position
}

// query runs a query that must succeed.
func query(t *testing.T, n *actorstest.Node, name string, params any, minPosition uint64, out any) actors.Answer {
	t.Helper()
	ans, err := n.Query(context.Background(), name, params, journal.TokenAt(0, minPosition), out)
	if err != nil {
		t.Fatalf("query %s %v: %v", name, params, err)
	}
	return ans
}

func balanceOf(t *testing.T, n *actorstest.Node, id string, minPosition uint64) int64 {
	t.Helper()
	var b int64
	query(t, n, "balance", map[string]string{"id": id}, minPosition, &b)
	return b
}

// queryError runs a query that must fail and checks the error's type and
// text.
func queryError(t *testing.T, n *actorstest.Node, name, params string, minPosition uint64, wantType any, wantText string) {
	t.Helper()
	_, err := n.RT.Query(context.Background(), name, json.RawMessage(params), journal.TokenAt(0, minPosition))
	if err == nil {
		t.Fatalf("query %s %s succeeded, want an error containing %q", name, params, wantText)
	}
	if !errors.As(err, wantType) || !strings.Contains(err.Error(), wantText) {
		t.Fatalf("query %s %s: %v (%T), want a %T containing %q", name, params, err, err, wantType, wantText)
	}
}

// events reads a stream's domain events straight from the journal.
func events(t *testing.T, n *actorstest.Node, stream string) []journal.Event {
	t.Helper()
	var out []journal.Event
	for ev, err := range n.Journal.Read(context.Background(), stream, 1, 0) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// TestAccountRefsStayBounded: an account remembers its recent refs, not
// every ref it ever applied, so its state (and snapshots) stay bounded.
func TestAccountRefsStayBounded(t *testing.T) {
	const n = 2*maxRefs + 500
	given := []any{Opened{}}
	for i := range n {
		given = append(given, Deposited{Amount: 1, Ref: fmt.Sprintf("t-%d/credit", i)})
	}
	s := actorstest.Given(Accounts, "a", given...).State()
	if s.Balance != n {
		t.Fatalf("balance %d, want %d", s.Balance, n)
	}
	if held := len(s.Refs) + len(s.OlderRefs); held > 2*maxRefs || held < maxRefs {
		t.Fatalf("the account holds %d refs, want %d to %d", held, maxRefs, 2*maxRefs)
	}
	for i := n - maxRefs; i < n; i++ {
		if ref := fmt.Sprintf("t-%d/credit", i); !s.applied(ref) {
			t.Fatalf("recent ref %s forgotten", ref)
		}
	}
	if s.applied("t-0/credit") {
		t.Fatalf("the oldest ref is still held")
	}
	// A recent repeat is still a no-op success.
	actorstest.Given(Accounts, "a", given...).
		When(Deposit{Amount: 5, Ref: fmt.Sprintf("t-%d/credit", n-1)}).
		ThenEvents(t).
		ThenReply(t, Reply{Balance: n})
}
