package linear_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"
	"go.uber.org/goleak"

	"github.com/troupe-dev/troupe/cluster/clustertest"
	"github.com/troupe-dev/troupe/cluster/clustertest/linear"
)

func TestMain(m *testing.M) {
	code := clustertest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestClassify(t *testing.T) {
	wire := func(c connect.Code, msg string) error { return connect.NewWireError(c, errors.New(msg)) }
	for _, tc := range []struct {
		name string
		err  error
		want linear.Output
	}{
		{"insufficient funds names the balance", wire(connect.CodeFailedPrecondition, "rejected: insufficient funds: balance 7, withdrawal 9"),
			linear.Output{Result: linear.Rejected, Reason: linear.InsufficientFunds, Balance: 7, BalanceKnown: true}},
		{"insufficient funds without a balance", wire(connect.CodeFailedPrecondition, "rejected: insufficient funds"),
			linear.Output{Result: linear.Rejected, Reason: linear.InsufficientFunds}},
		{"another rejection", wire(connect.CodeFailedPrecondition, "rejected: plugin validate-amount: too big"),
			linear.Output{Result: linear.Rejected, Reason: linear.OtherRejection}},
		{"invalid argument", wire(connect.CodeInvalidArgument, "payload"), linear.Output{Result: linear.Rejected, Reason: linear.OtherRejection}},
		{"not found", wire(connect.CodeNotFound, "x"), linear.Output{Result: linear.Rejected, Reason: linear.OtherRejection}},
		{"permission denied", wire(connect.CodePermissionDenied, "internal"), linear.Output{Result: linear.Rejected, Reason: linear.OtherRejection}},
		{"unavailable", wire(connect.CodeUnavailable, "shard 3 is moving"), linear.Output{Result: linear.Unknown}},
		{"deadline from the node", wire(connect.CodeDeadlineExceeded, "outcome unknown"), linear.Output{Result: linear.Unknown}},
		{"aborted", wire(connect.CodeAborted, "conflict"), linear.Output{Result: linear.Unknown}},
		{"resource exhausted", wire(connect.CodeResourceExhausted, "mailbox full"), linear.Output{Result: linear.Unknown}},
		{"internal", wire(connect.CodeInternal, "bug"), linear.Output{Result: linear.Unknown}},
		// Not from a node: connect synthesises these from the transport.
		{"transport error", connect.NewError(connect.CodeUnavailable, errors.New("connection refused")), linear.Output{Result: linear.Unknown}},
		{"client-side rejection code", connect.NewError(connect.CodeFailedPrecondition, errors.New("insufficient funds: balance 1")), linear.Output{Result: linear.Unknown}},
		{"plain error", context.DeadlineExceeded, linear.Output{Result: linear.Unknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := linear.Classify(tc.err)
			if got.Err == "" {
				t.Errorf("Err is empty")
			}
			got.Err = ""
			if got != tc.want {
				t.Errorf("Classify = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  linear.Config
		want string
	}{
		{"no nodes", linear.Config{}, "Nodes"},
		{"not a URL", linear.Config{Nodes: []string{"10.0.0.1:8080"}}, "base URL"},
		{"negative workers", linear.Config{Nodes: []string{"http://127.0.0.1:1"}, Workers: -1}, "Workers -1"},
		{"too many ops per account", linear.Config{Nodes: []string{"http://127.0.0.1:1"}, MaxOpsPerAccount: 5000}, "probe ref"},
		{"prefix with a slash", linear.Config{Nodes: []string{"http://127.0.0.1:1"}, AccountPrefix: "a/b"}, "AccountPrefix"},
		{"bad pick", linear.Config{Nodes: []string{"http://127.0.0.1:1"}, Pick: 7}, "Pick 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := linear.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error about %q", err, tc.want)
			}
		})
	}
	if _, err := linear.New(linear.Config{Nodes: []string{"http://127.0.0.1:1"}}); err != nil {
		t.Errorf("New with defaults: %v", err)
	}
}

func ev(acct string, seq uint64, typ string, amount int64, ref string) linear.StreamEvent {
	p, _ := json.Marshal(map[string]any{"amount": amount, "ref": ref})
	return linear.StreamEvent{Stream: "account/" + acct, Sequence: seq, Type: typ, Payload: p}
}

func TestAudit(t *testing.T) {
	ops := []linear.Op{
		dep(0, "a", 1, "p", 0, 1, ok(1)),
		dep(0, "a", 10, "r1", 2, 3, ok(11)),
		wd(1, "a", 4, "r2", 2, 4, ok(7)),
		dep(2, "a", 3, "r3", 5, 0, unknown),                               // may or may not be there
		wd(3, "a", 50, "r4", 5, 6, insufficient(7)),                       // must not be there
		read(1, "a", 7, 8, ok(7)),                                         // the probe ref again
		dep(0, "b", 5, "r1", 0, 0, unknown),                               // retried:
		dep(0, "b", 5, "r1", 1, 2, ok(5)),                                 // acknowledged
		dep(0, "b", 2, "r9", 3, 0, linear.Output{Result: linear.Unknown}), // never applied: fine
	}
	good := map[string][]linear.StreamEvent{
		"a": {
			{Stream: "account/a", Sequence: 1, Type: "Opened", Payload: json.RawMessage(`{"owner":"x"}`)},
			ev("a", 2, "Deposited", 1, "p"), ev("a", 3, "Deposited", 10, "r1"), ev("a", 4, "Withdrawn", 4, "r2"),
		},
		"b": {ev("b", 1, "Deposited", 5, "r1")},
	}
	with := func(acct string, evs ...linear.StreamEvent) map[string][]linear.StreamEvent {
		m := map[string][]linear.StreamEvent{}
		for k, v := range good {
			m[k] = append([]linear.StreamEvent(nil), v...)
		}
		m[acct] = evs
		return m
	}
	for _, tc := range []struct {
		name                   string
		events                 map[string][]linear.StreamEvent
		lost, doubled, phantom int
	}{
		{"clean", good, 0, 0, 0},
		{"clean with the unknown deposit applied", with("a", append(good["a"], ev("a", 5, "Deposited", 3, "r3"))...), 0, 0, 0},
		{"an acknowledged deposit is missing", with("a", good["a"][0], good["a"][1], good["a"][3]), 1, 0, 0},
		{"an account's stream is missing", with("b"), 1, 0, 0},
		{"a retried deposit applied twice", with("b", ev("b", 1, "Deposited", 5, "r1"), ev("b", 2, "Deposited", 5, "r1")), 0, 1, 0},
		{"a rejected withdrawal applied", with("a", append(good["a"], ev("a", 5, "Withdrawn", 50, "r4"))...), 0, 0, 1},
		{"a ref nobody sent", with("b", ev("b", 1, "Deposited", 5, "r1"), ev("b", 2, "Deposited", 5, "zz")), 0, 0, 1},
		{"a different amount", with("b", ev("b", 1, "Deposited", 6, "r1")), 0, 0, 1},
		{"a deposit turned withdrawal", with("b", ev("b", 1, "Withdrawn", 5, "r1")), 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := linear.Audit(ops, tc.events)
			if len(r.Lost) != tc.lost || len(r.Doubled) != tc.doubled || len(r.Phantom) != tc.phantom {
				t.Fatalf("%s\nlost %q\ndoubled %q\nphantom %q", r, r.Lost, r.Doubled, r.Phantom)
			}
			if (tc.lost+tc.doubled+tc.phantom == 0) != (r.Err() == nil) {
				t.Errorf("Err() = %v", r.Err())
			}
			var ae *linear.AuditError
			if err := r.Err(); err != nil && !errors.As(err, &ae) {
				t.Errorf("Err() is %T, want *AuditError", err)
			}
		})
	}
	if r := linear.Audit(ops, good); r.Balances["a"] != 7 || r.Balances["b"] != 5 || r.Acknowledged != 4 {
		t.Errorf("balances %v, acknowledged %d; want a 7, b 5 and 4 refs (p, r1, r2 of a; r1 of b)", r.Balances, r.Acknowledged)
	}
}

// TestSingleNode runs concurrent workers against a real node (the troupe
// binary, as clustertest runs it) and checks the history and the streams;
// then it shows that both checks see a change of one operation or one
// event in that same real history.
func TestSingleNode(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Args: clustertest.SingleNodeArgs})
	url := c.Node(0).HTTPURL()
	cl, err := linear.New(linear.Config{
		Nodes:            []string{url, url}, // two "nodes": round robin over one
		HTTPClient:       c.HTTPClient(),
		Accounts:         6,
		Workers:          8,
		Duration:         3 * time.Second,
		MaxOpsPerAccount: 120,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stats, err := cl.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v (%s)", err, stats)
	}
	t.Logf("run: %s", stats)
	if stats.OK < 100 || stats.OtherRejections != 0 {
		t.Fatalf("want at least 100 ok commands and no rejections but for funds: %s", stats)
	}

	dir := t.TempDir()
	ops := cl.Recorder().Ops()
	res, info, err := linear.Check(ops, 20*time.Second, dir)
	t.Logf("check: %s: %s", res, info)
	if res != porcupine.Ok || err != nil {
		t.Fatalf("history: %s (%v), want Ok: %s", res, err, info)
	}

	events, err := linear.ReadStreams(ctx, c.HTTPClient(), url, cl.Accounts())
	if err != nil {
		t.Fatal(err)
	}
	rep := linear.Audit(ops, events)
	t.Logf("audit: %s", rep)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	acked := 0
	for _, n := range stats.Acknowledged {
		acked += n
	}
	if rep.Acknowledged < acked || rep.Applied < acked {
		t.Errorf("audit saw %d acknowledged refs and %d events; the client counted %d acknowledged writes", rep.Acknowledged, rep.Applied, acked)
	}

	// The same real history, one answer that no order of the operations
	// explains (more than every deposit together). A change by one is
	// not always illegal: a read concurrent with a deposit of 1 may be
	// ordered after it (a run hit exactly that).
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Output.Result == linear.OK && ops[i].Output.BalanceKnown {
			bad := append([]linear.Op(nil), ops...)
			bad[i].Output.Balance += 1 << 40
			res, info, err := linear.Check(bad, 20*time.Second, dir)
			if res != porcupine.Illegal || err != nil || info.Visualization == "" {
				t.Errorf("history with %s changed: %s (%v), want Illegal with a visualisation", cl.Accounts(), res, err)
			}
			break
		}
	}
	// The same real streams, one acknowledged event dropped, and one doubled.
	for a, evs := range events {
		for j, e := range evs {
			if e.Type != "Deposited" && e.Type != "Withdrawn" {
				continue
			}
			dropped := map[string][]linear.StreamEvent{}
			doubled := map[string][]linear.StreamEvent{}
			for k, v := range events {
				dropped[k], doubled[k] = v, v
			}
			dropped[a] = append(append([]linear.StreamEvent(nil), evs[:j]...), evs[j+1:]...)
			doubled[a] = append(append([]linear.StreamEvent(nil), evs...), e)
			if r := linear.Audit(ops, dropped); len(r.Lost) != 1 {
				t.Errorf("audit of the streams without %s seq %d: %s, want 1 lost", a, e.Sequence, r)
			}
			if r := linear.Audit(ops, doubled); len(r.Doubled) != 1 {
				t.Errorf("audit of the streams with %s seq %d twice: %s, want 1 doubled", a, e.Sequence, r)
			}
			return
		}
	}
	t.Fatal("no money events to drop")
}

// TestSingleNodeKill kills the node (kill -9) under load and restarts it:
// requests in flight end Unknown, commands are retried with their refs and
// idempotency keys, and still the history is linearizable and no
// acknowledged write is lost or doubled (the journal syncs before it
// acknowledges).
func TestSingleNodeKill(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Args: clustertest.SingleNodeArgs})
	n := c.Node(0)
	cl, err := linear.New(linear.Config{
		Nodes:            []string{n.HTTPURL()},
		HTTPClient:       c.HTTPClient(),
		Accounts:         8,
		Workers:          8,
		Duration:         6 * time.Second,
		MaxOpsPerAccount: 300,
		AttemptTimeout:   time.Second,
		Attempts:         12, // backoff 50 ms doubling to 1 s: retries span ~9 s, enough for a restart
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		stats linear.Stats
		err   error
	}
	done := make(chan result, 1)
	go func() {
		s, err := cl.Run(ctx)
		done <- result{s, err}
	}()
	clustertest.Eventually(t, 20*time.Second, "300 operations recorded", func() error {
		if k := len(cl.Recorder().Ops()); k < 300 {
			return fmt.Errorf("%d", k)
		}
		return nil
	})
	n.Kill()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Run: %v (%s)", r.err, r.stats)
	}
	t.Logf("run: %s", r.stats)
	if r.stats.Requests == r.stats.Commands || len(r.stats.Errors) == 0 {
		t.Fatalf("the kill went unnoticed: %s", r.stats)
	}
	if r.stats.OtherRejections != 0 {
		t.Fatalf("rejections other than for funds: %s", r.stats)
	}
	// The node is back: commands left Unknown get their answers.
	if s, err := cl.Settle(ctx); err != nil {
		t.Fatalf("Settle: %v (%s)", err, s)
	}

	ops := cl.Recorder().Ops()
	for _, op := range ops {
		if op.Input.Kind != linear.Read && !acknowledgedOrRejected(ops, op.Input) {
			t.Fatalf("%+v: no definite answer after Settle", op.Input)
		}
	}
	res, info, err := linear.Check(ops, 20*time.Second, t.TempDir())
	t.Logf("check: %s: %s", res, info)
	if res != porcupine.Ok || err != nil {
		t.Fatalf("history: %s (%v), want Ok: %s", res, err, info)
	}
	events, err := linear.ReadStreams(ctx, c.HTTPClient(), n.HTTPURL(), cl.Accounts())
	if err != nil {
		t.Fatal(err)
	}
	rep := linear.Audit(ops, events)
	t.Logf("audit: %s", rep)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
}
