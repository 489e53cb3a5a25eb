package linear_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/troupe-dev/troupe/cluster/clustertest/linear"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

// fault is a way for the fake bank below to break its promises.
type fault int

const (
	honest       fault = iota
	doubleApply        // a retry is applied again (keys and refs ignored)
	staleRead          // a read answers the balance before the last write
	lostWrite          // every 5th write is acknowledged but not applied
	phantomWrite       // every 5th write is applied, and the client told it was rejected
	moving             // every 3rd write is refused as "moving; not applied", truthfully
	movingLie          // every 3rd write is applied, then refused as "moving; not applied"
)

// fakeBank serves CommandService.Send for accounts with the bank's rules,
// and loses the reply of every 4th write after applying it (the client sees
// unavailable and retries with the same key), so that the client's
// retries, idempotency keys and merged duplicates are exercised; with a
// fault it also does something wrong. It is a unit test of the client's
// recording and of the checks, not of Troupe.
type fakeBank struct {
	fault fault

	// blackout, while set, fails every Deposit and Withdraw with
	// unavailable, after applying every other one.
	blackout bool

	mu       sync.Mutex
	writes   int
	accounts map[string]*fakeAccount
}

type fakeAccount struct {
	open        bool
	balance     int64
	prevBalance int64
	refs        map[string]bool
	keys        map[string]int64 // idempotency key → the first reply's balance
	events      []linear.StreamEvent
}

func (f *fakeBank) Send(_ context.Context, req *connect.Request[troupev1.SendRequest]) (*connect.Response[troupev1.SendResponse], error) {
	m := req.Msg
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.accounts[m.GetId()]
	if a == nil {
		a = &fakeAccount{refs: map[string]bool{}, keys: map[string]int64{}}
		f.accounts[m.GetId()] = a
	}
	reply := func(b int64, dup bool) (*connect.Response[troupev1.SendResponse], error) {
		v, _ := structpb.NewValue(map[string]any{"balance": b})
		return connect.NewResponse(&troupev1.SendResponse{Reply: v, Duplicate: dup}), nil
	}
	if m.GetType() == "Open" {
		if a.open {
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("rejected: account is already open"))
		}
		a.open = true
		return reply(0, false)
	}
	amount := int64(m.GetPayload().GetFields()["amount"].GetNumberValue())
	ref := m.GetPayload().GetFields()["ref"].GetStringValue()
	key := m.GetIdempotencyKey()
	if f.blackout {
		f.writes++
		if f.writes%2 == 0 && !a.refs[ref] {
			typ, delta := "Deposited", amount
			if m.GetType() == "Withdraw" {
				typ, delta = "Withdrawn", -amount
			}
			if a.balance+delta >= 0 {
				a.apply(typ, delta, amount, ref, key, m.GetId())
			}
		}
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("blackout"))
	}
	if b, ok := a.keys[key]; ok && f.fault != doubleApply {
		return reply(b, true)
	}
	if a.refs[ref] && f.fault != doubleApply {
		if f.fault == staleRead {
			return reply(a.prevBalance, false)
		}
		return reply(a.balance, false)
	}
	typ, delta := "Deposited", amount
	if m.GetType() == "Withdraw" {
		if amount > a.balance {
			return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("rejected: insufficient funds: balance %d, withdrawal %d", a.balance, amount))
		}
		typ, delta = "Withdrawn", -amount
	}
	f.writes++
	switch {
	case f.fault == moving && f.writes%3 == 0:
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("shard 3 is moving; not applied: send it again"))
	case f.fault == movingLie && f.writes%3 == 0:
		a.apply(typ, delta, amount, ref, key, m.GetId())
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("shard 3 is moving; not applied: send it again"))
	case f.fault == lostWrite && f.writes%5 == 0:
		return reply(a.balance+delta, false)
	case f.fault == phantomWrite && f.writes%5 == 0:
		a.apply(typ, delta, amount, ref, key, m.GetId())
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("rejected: for no reason"))
	}
	a.apply(typ, delta, amount, ref, key, m.GetId())
	if f.writes%4 == 0 {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("the reply was lost"))
	}
	return reply(a.balance, false)
}

func (a *fakeAccount) apply(typ string, delta, amount int64, ref, key, id string) {
	a.prevBalance = a.balance
	a.balance += delta
	a.refs[ref] = true
	a.keys[key] = a.balance
	p, _ := json.Marshal(map[string]any{"amount": amount, "ref": ref})
	a.events = append(a.events, linear.StreamEvent{Stream: "account/" + id, Sequence: uint64(len(a.events) + 1), Type: typ, Payload: p})
}

func (f *fakeBank) streams() map[string][]linear.StreamEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]linear.StreamEvent{}
	for id, a := range f.accounts {
		out[id] = append([]linear.StreamEvent(nil), a.events...)
	}
	return out
}

// TestClientAgainstFaults runs the client against the fake bank, honest
// and with each fault, and checks that the checker and the audit tell them
// apart.
func TestClientAgainstFaults(t *testing.T) {
	for _, tc := range []struct {
		name         string
		fault        fault
		linearizable bool
		lost, double bool
		phantom      bool
		attempts     int  // default 3
		notApplied   bool // trust "not applied" in unavailable errors
	}{
		{name: "honest, with lost replies", fault: honest, linearizable: true},
		{name: "a retry applied twice", fault: doubleApply, double: true},
		{name: "stale reads", fault: staleRead},
		{name: "acknowledged writes lost", fault: lostWrite, lost: true},
		{name: "writes applied but rejected", fault: phantomWrite, phantom: true},
		{name: "moving shards, trusted to have applied nothing", fault: moving, linearizable: true, notApplied: true},
		{name: "moving shards that did apply, trusted, never retried", fault: movingLie, notApplied: true, attempts: 1, phantom: true},
		{name: "moving shards that did apply, not trusted", fault: movingLie, linearizable: true, attempts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bank := &fakeBank{fault: tc.fault, accounts: map[string]*fakeAccount{}}
			path, h := troupev1connect.NewCommandServiceHandler(bank)
			mux := httptestMux(path, h)
			srv := httptest.NewServer(mux)
			defer srv.Close()
			cfg := linear.Config{
				Nodes:    []string{srv.URL},
				Accounts: 4, Workers: 4, Ops: 240, Duration: 20 * time.Second,
				Backoff: time.Millisecond, Attempts: 3, Seed: 7,
			}
			if tc.attempts != 0 {
				cfg.Attempts = tc.attempts
			}
			if tc.notApplied {
				cfg.NotApplied = func(code, msg string) bool {
					return code == "unavailable" && strings.Contains(msg, "not applied")
				}
			}
			cl, err := linear.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			stats, err := cl.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if stats.Requests <= stats.Commands && cfg.Attempts > 1 {
				t.Fatalf("no retries: %s", stats)
			}
			ops := cl.Recorder().Ops()
			if tc.notApplied {
				n := 0
				for _, op := range ops {
					if op.Output.Reason == linear.NotApplied {
						n++
					}
				}
				if n == 0 {
					t.Fatalf("no request recorded as not applied: %s", stats)
				}
			}
			res, info, err := linear.Check(ops, 20*time.Second, "")
			if err != nil || (res == porcupine.Ok) != tc.linearizable || res == porcupine.Unknown {
				t.Errorf("check: %s (%v), want linearizable %v: %s", res, err, tc.linearizable, info)
			}
			rep := linear.Audit(ops, bank.streams())
			if (len(rep.Lost) > 0) != tc.lost || (len(rep.Doubled) > 0) != tc.double || (len(rep.Phantom) > 0) != tc.phantom {
				t.Errorf("audit: %s, want lost %v, doubled %v, phantom %v\n%v", rep, tc.lost, tc.double, tc.phantom, rep.Err())
			}
			if tc.fault == honest {
				// Every lost reply was retried into a duplicate, recorded
				// as one operation: no Unknown is left in the history.
				if info.Unknown != 0 || stats.Unknown != 0 || stats.Errors["unavailable"] == 0 {
					t.Errorf("honest run: %s; %s", stats, info)
				}
			}
		})
	}
}

func httptestMux(path string, h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(path, h)
	return mux
}

// TestSettle leaves most commands Unknown (a blackout that applies half of
// them and answers none), then settles them once the fake bank answers
// again: every deposit and withdrawal gets a definite outcome, the history
// checks, and the audit is clean. (Every command of the run stays open
// until Settle, so all are concurrent: few per account, or the check
// explodes.)
func TestSettle(t *testing.T) {
	bank := &fakeBank{accounts: map[string]*fakeAccount{}, blackout: true}
	path, h := troupev1connect.NewCommandServiceHandler(bank)
	srv := httptest.NewServer(httptestMux(path, h))
	defer srv.Close()
	cl, err := linear.New(linear.Config{
		Nodes:    []string{srv.URL},
		Accounts: 8, Workers: 4, Ops: 40, Duration: 20 * time.Second,
		Backoff: time.Millisecond, Attempts: 2, Seed: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := cl.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stats.Unknown < 30 || stats.OK != 0 {
		t.Fatalf("blackout run: %s; want nearly every command unknown", stats)
	}
	bank.mu.Lock()
	bank.blackout = false
	bank.mu.Unlock()

	stats, err = cl.Settle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("settled: %s", stats)
	ack := 0
	for _, n := range stats.Acknowledged {
		ack += n
	}
	// What is left Unknown are reads, which are not settled.
	if stats.Unknown != stats.Commands-stats.OK-stats.Rejected || ack == 0 {
		t.Fatalf("after Settle: %s", stats)
	}
	ops := cl.Recorder().Ops()
	for _, op := range ops {
		if op.Output.Result == linear.Unknown && op.Input.Kind != linear.Read {
			if op.Input.Ref != linear.ProbeRef(op.Input.Account) && !acknowledgedOrRejected(ops, op.Input) {
				t.Fatalf("write %+v still unknown after Settle", op.Input)
			}
		}
	}
	res, info, err := linear.Check(ops, 20*time.Second, t.TempDir())
	t.Logf("check: %s: %s", res, info)
	if res != porcupine.Ok || err != nil {
		t.Fatalf("check after Settle: %s (%v): %s", res, err, info)
	}
	if rep := linear.Audit(ops, bank.streams()); rep.Err() != nil || rep.Acknowledged < ack {
		t.Fatalf("audit: %v (%s)", rep.Err(), rep)
	}
	if again, err := cl.Settle(context.Background()); err != nil || again.Requests != stats.Requests {
		t.Fatalf("a second Settle sent requests (%v): %s", err, again)
	}
}

// acknowledgedOrRejected tells whether some operation with in's account and
// ref got a definite answer.
func acknowledgedOrRejected(ops []linear.Op, in linear.Input) bool {
	for _, op := range ops {
		if op.Input.Account == in.Account && op.Input.Ref == in.Ref && op.Output.Result != linear.Unknown {
			return true
		}
	}
	return false
}
