package bank

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/actors/actorstest"
	"github.com/troupe-dev/troupe/journal"
)

// waitTransfer polls the transfer query until the transfer is over and
// returns it with the answer, whose position covers its last event.
func waitTransfer(t *testing.T, n *actorstest.Node, id string) (Transfer, actors.Answer) {
	t.Helper()
	var tr Transfer
	var ans actors.Answer
	actorstest.Eventually(t, wait, func() bool {
		var err error
		ans, err = n.Query(context.Background(), "transfer", map[string]string{"id": id}, journal.Token{}, &tr)
		var nf *actors.NotFoundError
		if err != nil && !errors.As(err, &nf) {
			t.Fatalf("transfer query: %v", err)
		}
		return err == nil && tr.Status.Terminal()
	})
	return tr, ans
}

// settle waits until the transfer process has handled every event of the
// journal without an error and returns the journal's last position, so that
// a step the process repeats late still shows up in what the test reads.
func settle(t *testing.T, n *actorstest.Node) uint64 {
	t.Helper()
	var head uint64
	actorstest.Eventually(t, wait, func() bool {
		head = n.Journal.LastPosition(0)
		for _, p := range n.RT.Projections() {
			if p.Name == TransferProcessName {
				return p.Position >= head && p.LastError == ""
			}
		}
		t.Fatalf("no projection %q", TransferProcessName)
		return false
	})
	return head
}

// refs counts the refs of an account's money events in its stream.
func refs(t *testing.T, n *actorstest.Node, id string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ev := range events(t, n, journal.StreamID(Kind, id)) {
		var e struct{ Ref string }
		if err := json.Unmarshal(ev.Payload, &e); err != nil {
			t.Fatal(err)
		}
		if e.Ref != "" {
			out[e.Ref]++
		}
	}
	return out
}

func TestTransferCompletes(t *testing.T) {
	n := startBank(t)
	openAccount(t, n, "a", 100)
	openAccount(t, n, "b", 10)
	out := send(t, n, TransferKind, "t-1", Start{From: "a", To: "b", Amount: 30})
	var reply Transfer
	if err := json.Unmarshal(out.Reply, &reply); err != nil || reply.Status != StatusStarted {
		t.Fatalf("Start replied %s (%v), want a started transfer", out.Reply, err)
	}

	tr, ans := waitTransfer(t, n, "t-1")
	want := Transfer{ID: "t-1", From: "a", To: "b", Amount: 30, Status: StatusCompleted}
	if tr != want {
		t.Fatalf("transfer %+v, want %+v", tr, want)
	}
	// The transfer completed only after the deposit, so balances at the
	// transfer answer's position show both legs.
	if a, b := balanceOf(t, n, "a", ans.Position), balanceOf(t, n, "b", ans.Position); a != 70 || b != 40 {
		t.Fatalf("balances a=%d b=%d, want 70 and 40", a, b)
	}
	var page StatementPage
	query(t, n, "statement", StatementParams{ID: "b"}, ans.Position, &page)
	if e := page.Entries[len(page.Entries)-1]; e.Type != "Deposited" || e.Amount != 30 || e.Ref != "t-1/credit" || e.Balance != 40 {
		t.Fatalf("last entry of b's statement %+v, want the credit of t-1", e)
	}
	// A transfer runs once.
	if _, err := n.Send(context.Background(), TransferKind, "t-1", Start{From: "a", To: "b", Amount: 30}); err == nil || !strings.Contains(err.Error(), "transfer t-1 was already started") {
		t.Fatalf("second Start: %v, want a rejection", err)
	}
}

func TestTransferWithdrawalRejected(t *testing.T) {
	n := startBank(t)
	openAccount(t, n, "a", 10)
	openAccount(t, n, "b", 0)
	send(t, n, TransferKind, "t-1", Start{From: "a", To: "b", Amount: 50})

	tr, _ := waitTransfer(t, n, "t-1")
	ans := actors.Answer{Position: settle(t, n)}
	if tr.Status != StatusFailed || tr.Reason != "debit of a rejected: insufficient funds: balance 10, withdrawal 50" {
		t.Fatalf("transfer %+v, want failed for insufficient funds", tr)
	}
	if a, b := balanceOf(t, n, "a", ans.Position), balanceOf(t, n, "b", ans.Position); a != 10 || b != 0 {
		t.Fatalf("balances a=%d b=%d, want 10 and 0: something moved", a, b)
	}
	if r := refs(t, n, "a"); len(r) != 0 {
		t.Fatalf("a's stream has transfer legs %v, want none", r)
	}
}

func TestTransferCompensates(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, n *actorstest.Node)
		reason string
	}{
		{"destination never opened", func(*testing.T, *actorstest.Node) {}, "credit of b rejected: account b is not open"},
		{"destination closed", func(t *testing.T, n *actorstest.Node) {
			openAccount(t, n, "b", 0)
			send(t, n, Kind, "b", Close{})
		}, "credit of b rejected: account b is closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := startBank(t)
			openAccount(t, n, "a", 100)
			tt.setup(t, n)
			send(t, n, TransferKind, "t-1", Start{From: "a", To: "b", Amount: 30})

			tr, _ := waitTransfer(t, n, "t-1")
			ans := actors.Answer{Position: settle(t, n)}
			if tr.Status != StatusCompensated || tr.Reason != tt.reason {
				t.Fatalf("transfer %+v, want compensated because %q", tr, tt.reason)
			}
			if a := balanceOf(t, n, "a", ans.Position); a != 100 {
				t.Fatalf("a holds %d, want 100 after the refund", a)
			}
			var got []string
			var page StatementPage
			query(t, n, "statement", StatementParams{ID: "a"}, ans.Position, &page)
			for _, e := range page.Entries {
				got = append(got, fmt.Sprintf("%s %d %s", e.Type, e.Amount, e.Ref))
			}
			if want := "[Opened 0  Deposited 100  Withdrawn -30 t-1/debit Deposited 30 t-1/refund]"; fmt.Sprint(got) != want {
				t.Fatalf("a's statement %v, want %s", got, want)
			}
			if r := refs(t, n, "b"); len(r) != 0 {
				t.Fatalf("b received %v, want nothing", r)
			}
		})
	}
}

func TestTransferRefundRejected(t *testing.T) {
	// The source is emptied by the debit and closed before the refund.
	var rt atomic.Pointer[actors.Runtime]
	n := actorstest.Start(t, actorstest.Config{Setup: func(r *actors.Runtime) error {
		rt.Store(r)
		return register(r, func(ctx context.Context, transfer, step string) error {
			if step != "credit-rejected" {
				return nil
			}
			return sendRT(ctx, rt.Load(), Kind, "a", Close{})
		})
	}})
	openAccount(t, n, "a", 30)
	send(t, n, TransferKind, "t-1", Start{From: "a", To: "b", Amount: 30})
	tr, _ := waitTransfer(t, n, "t-1")
	want := "credit of b rejected: account b is not open; refund to a rejected: account a is closed; transfer t-1 holds 30"
	if tr.Status != StatusFailed || tr.Reason != want {
		t.Fatalf("transfer %+v, want failed because %q", tr, want)
	}
}

func sendRT(ctx context.Context, rt *actors.Runtime, kind, id string, cmd any) error {
	c, err := actors.NewCommand(kind, id, cmd)
	if err != nil {
		return err
	}
	_, err = rt.Send(ctx, c)
	return err
}

var errCrash = errors.New("simulated crash")

type accountCommand struct {
	id  string
	cmd any
}

// TestTransferRepeatsNothing crashes the transfer process (a fault that
// ends the reaction, so the event is handled again) between a step and the
// record of its outcome, and changes the world in that window so that a
// naive repeat would come out differently. Every case must end as if
// nothing had crashed.
func TestTransferRepeatsNothing(t *testing.T) {
	tests := []struct {
		name string
		// a and b are the opening balances; b < 0: b is never opened.
		a, b   int64
		amount int64
		// crashAfter is the step after which the process crashes; meanwhile
		// is what happens before the repeat.
		crashAfter string
		meanwhile  []accountCommand
		status     Status
		// balances at the end; b < 0: b does not exist.
		wantA, wantB int64
		// refs each account must hold exactly once
		refsA, refsB []string
	}{
		{
			name: "debit done, source drained before the repeat",
			a:    100, b: 0, amount: 60, crashAfter: "debit",
			meanwhile: []accountCommand{{"a", Withdraw{Amount: 40}}}, // a's balance 0 cannot cover 60 again
			status:    StatusCompleted, wantA: 0, wantB: 60,
			refsA: []string{"t-1/debit"}, refsB: []string{"t-1/credit"},
		},
		{
			name: "debit rejected and recorded, source funded before the repeat",
			a:    10, b: 0, amount: 50, crashAfter: "failed",
			meanwhile: []accountCommand{{"a", Deposit{Amount: 100}}}, // a's 110 would now cover 50
			status:    StatusFailed, wantA: 110, wantB: 0,
		},
		{
			name: "credit done, destination emptied and closed before the repeat",
			a:    100, b: 0, amount: 30, crashAfter: "credit",
			meanwhile: []accountCommand{{"b", Withdraw{Amount: 30}}, {"b", Close{}}}, // a closed b would reject the credit
			status:    StatusCompleted, wantA: 70, wantB: 0,
			refsA: []string{"t-1/debit"}, refsB: []string{"t-1/credit"},
		},
		{
			name: "credit rejected and recorded, destination opened before the repeat",
			a:    100, b: -1, amount: 30, crashAfter: "credit-rejected",
			meanwhile: []accountCommand{{"b", Open{Owner: "owner-of-b"}}}, // an open b would take the credit
			status:    StatusCompensated, wantA: 100, wantB: 0,
			refsA: []string{"t-1/debit", "t-1/refund"},
		},
		{
			name: "refund done, destination opened before the repeat",
			a:    100, b: -1, amount: 30, crashAfter: "refund",
			meanwhile: []accountCommand{{"b", Open{Owner: "owner-of-b"}}},
			status:    StatusCompensated, wantA: 100, wantB: 0,
			refsA: []string{"t-1/debit", "t-1/refund"},
		},
		{
			name: "debit recorded, nothing changed before the repeat",
			a:    100, b: 0, amount: 30, crashAfter: "debited",
			status: StatusCompleted, wantA: 70, wantB: 30,
			refsA: []string{"t-1/debit"}, refsB: []string{"t-1/credit"},
		},
		{
			name: "transfer completed, nothing changed before the repeat",
			a:    100, b: 0, amount: 30, crashAfter: "completed",
			status: StatusCompleted, wantA: 70, wantB: 30,
			refsA: []string{"t-1/debit"}, refsB: []string{"t-1/credit"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rt atomic.Pointer[actors.Runtime]
			var crashed atomic.Int32
			fault := func(ctx context.Context, transfer, step string) error {
				if step != tt.crashAfter || !crashed.CompareAndSwap(0, 1) {
					return nil
				}
				for _, c := range tt.meanwhile {
					if err := sendRT(ctx, rt.Load(), Kind, c.id, c.cmd); err != nil {
						t.Errorf("meanwhile %s %T: %v", c.id, c.cmd, err)
					}
				}
				return errCrash
			}
			n := actorstest.Start(t, actorstest.Config{Setup: func(r *actors.Runtime) error {
				rt.Store(r)
				return register(r, fault)
			}})
			openAccount(t, n, "a", tt.a)
			if tt.b >= 0 {
				openAccount(t, n, "b", tt.b)
			}
			send(t, n, TransferKind, "t-1", Start{From: "a", To: "b", Amount: tt.amount})

			tr, _ := waitTransfer(t, n, "t-1")
			head := settle(t, n)
			if crashed.Load() != 1 {
				t.Fatalf("the process never reached step %q", tt.crashAfter)
			}
			if tr.Status != tt.status {
				t.Fatalf("transfer %+v, want %s", tr, tt.status)
			}
			if a := balanceOf(t, n, "a", head); a != tt.wantA {
				t.Errorf("a holds %d, want %d", a, tt.wantA)
			}
			if b := balanceOf(t, n, "b", head); b != tt.wantB {
				t.Errorf("b holds %d, want %d", b, tt.wantB)
			}
			for _, c := range []struct {
				id   string
				want []string
			}{{"a", tt.refsA}, {"b", tt.refsB}} {
				got := refs(t, n, c.id)
				want := map[string]int{}
				for _, r := range c.want {
					want[r] = 1
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s's transfer legs %v, want each of %v once", c.id, got, c.want)
				}
			}
		})
	}
}

// TestTransfersSurviveRestart restarts the node twice while transfers are
// in flight: first with the process held right after a money leg and
// before its record (the window that matters), then at whatever point the
// process has reached. Afterwards every transfer is over, each account
// holds exactly what the completed transfers say (no leg applied twice,
// none lost), and the bank holds as much money as before.
func TestTransfersSurviveRestart(t *testing.T) {
	ctx := context.Background()
	// hold parks the process once, after the 20th step or later that moved
	// money, until its node closes: the close then lands between the leg
	// and its record, as a crash would.
	var steps, held atomic.Int32
	hold := func(ctx context.Context, transfer, step string) error {
		if steps.Add(1) < 20 || step != "debit" && step != "credit" && step != "refund" || !held.CompareAndSwap(0, 1) {
			return nil
		}
		held.Store(2)
		<-ctx.Done()
		return ctx.Err()
	}
	n := actorstest.Start(t, actorstest.Config{Setup: func(rt *actors.Runtime) error { return register(rt, hold) }})

	const accounts, perBatch = 8, 40
	initial := map[string]int64{}
	for i := range accounts {
		id := fmt.Sprintf("acc-%d", i)
		initial[id] = int64(500 + 100*i)
		openAccount(t, n, id, initial[id])
	}
	// A destination that refuses credits, to exercise compensation too.
	openAccount(t, n, "shut", 0)
	send(t, n, Kind, "shut", Close{})

	type plan struct {
		from, to string
		amount   int64
	}
	plans := map[string]plan{}
	startBatch := func(n *actorstest.Node, batch int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range perBatch {
			k := batch*perBatch + i
			p := plan{from: fmt.Sprintf("acc-%d", k%accounts), to: fmt.Sprintf("acc-%d", (k*3+1)%accounts), amount: int64(50 + (k*37)%400)}
			if p.from == p.to || k%9 == 0 {
				p.to = "shut"
			}
			id := fmt.Sprintf("t-%d", k)
			plans[id] = p
			wg.Go(func() {
				if _, err := n.Send(ctx, TransferKind, id, Start{From: p.from, To: p.to, Amount: p.amount}); err != nil {
					t.Errorf("start %s: %v", id, err)
				}
			})
		}
		wg.Wait()
	}
	// terminalInJournal counts the transfers whose last event is terminal,
	// which is the truth the read model may lag behind.
	terminalInJournal := func(n *actorstest.Node) int {
		done := 0
		for ev, err := range n.Journal.ReadAll(ctx, 0, 1, journal.Filter{Kind: TransferKind}, 0) {
			if err != nil {
				t.Fatal(err)
			}
			switch ev.Type {
			case "Completed", "Failed", "Compensated":
				done++
			}
		}
		return done
	}

	startBatch(n, 0)
	actorstest.Eventually(t, wait, func() bool { return held.Load() == 2 })
	t.Logf("first restart, held after step %d, with %d of %d transfers over", steps.Load(), terminalInJournal(n), perBatch)
	n = n.Restart(t)

	startBatch(n, 1)
	// Let the restarted process get going, then restart it again.
	actorstest.Eventually(t, wait, func() bool { return terminalInJournal(n) > 0 })
	t.Logf("second restart with %d of %d transfers over", terminalInJournal(n), 2*perBatch)
	n = n.Restart(t)

	expected := map[string]int64{}
	for id, b := range initial {
		expected[id] = b
	}
	counts := map[Status]int{}
	var last uint64
	for id, p := range plans {
		tr, ans := waitTransfer(t, n, id)
		last = max(last, ans.Position)
		counts[tr.Status]++
		switch tr.Status {
		case StatusCompleted:
			if p.to == "shut" {
				t.Fatalf("%s completed into a closed account", id)
			}
			expected[p.from] -= p.amount
			expected[p.to] += p.amount
		case StatusFailed:
			if !strings.Contains(tr.Reason, "insufficient funds") {
				t.Fatalf("%s failed: %s", id, tr.Reason)
			}
		case StatusCompensated:
			if p.to != "shut" {
				t.Fatalf("%s compensated, but %s takes credits: %s", id, p.to, tr.Reason)
			}
		}
	}
	last = max(last, settle(t, n))
	t.Logf("outcomes: %v", counts)
	if counts[StatusCompleted] == 0 || counts[StatusFailed] == 0 || counts[StatusCompensated] == 0 {
		t.Fatalf("outcomes %v: the test should exercise all three", counts)
	}

	var total, want int64
	for id := range initial {
		// The journal is the truth; the read model must agree with it.
		var evs []any
		for _, ev := range events(t, n, journal.StreamID(Kind, id)) {
			e, ok, err := accountEvent(ev)
			if err != nil || !ok {
				t.Fatalf("%s event %d: %v", id, ev.Sequence, err)
			}
			evs = append(evs, e)
		}
		folded := actorstest.Given(Accounts, id, evs...)
		if got := folded.State().Balance; got != expected[id] {
			t.Errorf("%s holds %d in the journal, want %d from the completed transfers", id, got, expected[id])
		}
		if got := balanceOf(t, n, id, last); got != expected[id] {
			t.Errorf("%s holds %d in the balances read model, want %d", id, got, expected[id])
		}
		for ref, k := range refs(t, n, id) {
			if k != 1 {
				t.Errorf("%s applied %s %d times", id, ref, k)
			}
		}
		total += folded.State().Balance
		want += initial[id]
	}
	if total != want {
		t.Fatalf("the bank holds %d, it held %d", total, want)
	}
}
