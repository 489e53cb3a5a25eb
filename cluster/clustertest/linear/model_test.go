package linear_test

import (
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/troupe-dev/troupe/cluster/clustertest/linear"
)

// Shorthands for hand-built histories: times are abstract ticks.

func dep(client int, acct string, amount int64, ref string, call, ret int64, out linear.Output) linear.Op {
	return linear.Op{Client: client, Input: linear.Input{Account: acct, Kind: linear.Deposit, Amount: amount, Ref: ref}, Output: out, Call: call, Return: ret}
}

func wd(client int, acct string, amount int64, ref string, call, ret int64, out linear.Output) linear.Op {
	return linear.Op{Client: client, Input: linear.Input{Account: acct, Kind: linear.Withdraw, Amount: amount, Ref: ref}, Output: out, Call: call, Return: ret}
}

// read repeats the probe deposit "p" of 1 (applied first in every history
// that reads).
func read(client int, acct string, call, ret int64, out linear.Output) linear.Op {
	return linear.Op{Client: client, Input: linear.Input{Account: acct, Kind: linear.Read, Amount: 1, Ref: "p"}, Output: out, Call: call, Return: ret}
}

func probe(acct string) linear.Op { return dep(9, acct, 1, "p", 0, 1, ok(1)) }

func ok(b int64) linear.Output {
	return linear.Output{Result: linear.OK, Balance: b, BalanceKnown: true}
}

var unknown = linear.Output{Result: linear.Unknown, Err: "deadline_exceeded"}

func insufficient(b int64) linear.Output {
	return linear.Output{Result: linear.Rejected, Reason: linear.InsufficientFunds, Balance: b, BalanceKnown: true}
}

func TestModel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ops     []linear.Op
		want    porcupine.CheckResult
		illegal []string
	}{
		{
			name: "concurrent deposits, a read, a rejection and a withdrawal",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 20, ok(11)),
				dep(1, "a", 5, "r2", 15, 25, ok(16)),
				read(2, "a", 22, 30, ok(16)),
				wd(0, "a", 20, "r3", 26, 35, insufficient(16)),
				wd(1, "a", 16, "r4", 31, 40, ok(0)),
			},
			want: porcupine.Ok,
		},
		{
			name: "overlapping deposits may take effect in either order",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 20, ok(15)),
				dep(1, "a", 5, "r2", 5, 25, ok(5)),
			},
			want: porcupine.Ok,
		},
		{
			name: "lost write: an acknowledged deposit is not in a later read",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 20, ok(11)),
				read(1, "a", 30, 40, ok(1)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "double apply: a retry with the same ref is applied again",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, ok(10)),
				dep(0, "a", 10, "r1", 20, 30, ok(20)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "double apply seen by a read, the first attempt unknown",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 0, unknown),
				dep(1, "a", 10, "r1", 20, 30, ok(11)),
				read(2, "a", 40, 50, ok(21)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "a repeated ref answers the current balance without effect",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, ok(10)),
				dep(1, "a", 5, "r2", 20, 30, ok(15)),
				dep(0, "a", 10, "r1", 40, 50, ok(15)),
			},
			want: porcupine.Ok,
		},
		{
			name: "stale read: a read misses a write that finished before it began",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 20, ok(11)),
				dep(0, "a", 5, "r2", 30, 40, ok(16)),
				read(1, "a", 50, 60, ok(11)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "an unknown deposit may have happened",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 0, unknown),
				read(1, "a", 20, 30, ok(11)),
			},
			want: porcupine.Ok,
		},
		{
			name: "an unknown deposit may not have happened",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 0, unknown),
				read(1, "a", 20, 30, ok(1)),
			},
			want: porcupine.Ok,
		},
		{
			name: "an unknown deposit may happen late, after later reads",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 0, unknown),
				read(1, "a", 20, 30, ok(1)),
				read(1, "a", 40, 50, ok(11)),
			},
			want: porcupine.Ok,
		},
		{
			name: "an unknown deposit once seen cannot vanish",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 0, unknown),
				read(1, "a", 20, 30, ok(11)),
				read(1, "a", 40, 50, ok(1)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "an unknown deposit cannot take effect before it was sent",
			ops: []linear.Op{
				probe("a"),
				read(1, "a", 10, 20, ok(11)),
				dep(0, "a", 10, "r1", 30, 0, unknown),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "an unknown attempt before its acknowledged retry may have applied the ref",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 0, unknown),
				read(1, "a", 20, 30, ok(11)),
				dep(2, "a", 10, "r1", 40, 50, ok(11)),
			},
			want: porcupine.Ok,
		},
		{
			name: "an unknown attempt and its acknowledged retry apply the ref once",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 0, unknown),
				read(1, "a", 20, 30, ok(11)),
				dep(2, "a", 10, "r1", 40, 50, ok(11)),
				read(1, "a", 60, 70, ok(21)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "an unknown repeat of an acknowledged ref has no effect",
			ops: []linear.Op{
				probe("a"),
				dep(0, "a", 10, "r1", 10, 20, ok(11)),
				dep(0, "a", 10, "r1", 30, 0, unknown),
				read(1, "a", 40, 50, ok(21)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "unknown reads of an applied probe",
			ops: []linear.Op{
				probe("a"),
				read(1, "a", 10, 0, unknown),
				dep(0, "a", 10, "r1", 10, 20, ok(11)),
				read(2, "a", 15, 0, unknown),
				read(1, "a", 30, 40, ok(11)),
			},
			want: porcupine.Ok,
		},
		{
			name: "insufficient funds while the balance covered the withdrawal",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, ok(10)),
				wd(0, "a", 5, "r2", 20, 30, insufficient(10)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "insufficient funds naming a balance the account never had then",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, ok(10)),
				wd(0, "a", 50, "r2", 20, 30, insufficient(7)),
			},
			want: porcupine.Illegal, illegal: []string{"a"},
		},
		{
			name: "insufficient funds without a balance",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, ok(10)),
				wd(0, "a", 50, "r2", 20, 30, linear.Output{Result: linear.Rejected, Reason: linear.InsufficientFunds}),
			},
			want: porcupine.Ok,
		},
		{
			name: "a repeated withdrawal ref succeeds even once the balance is short",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, ok(10)),
				wd(0, "a", 10, "r2", 20, 30, ok(0)),
				wd(0, "a", 10, "r2", 40, 50, ok(0)),
			},
			want: porcupine.Ok,
		},
		{
			name: "other rejections did not happen",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, linear.Output{Result: linear.Rejected, Reason: linear.OtherRejection, Err: "failed_precondition: plugin"}),
				dep(0, "a", 5, "r2", 20, 30, ok(5)),
			},
			want: porcupine.Ok,
		},
		{
			name: "accounts are checked apart: only the one at fault is named",
			ops: []linear.Op{
				dep(0, "a", 10, "r1", 0, 10, ok(10)),
				dep(1, "b", 10, "r1", 0, 10, ok(10)),
				dep(0, "a", 10, "r2", 20, 30, ok(20)),
				dep(1, "b", 10, "r2", 20, 30, ok(30)),
				dep(2, "c", 10, "r1", 5, 25, ok(10)),
			},
			want: porcupine.Illegal, illegal: []string{"b"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, info, err := linear.Check(tc.ops, 10*time.Second, "")
			if err != nil {
				t.Fatal(err)
			}
			if res != tc.want {
				t.Fatalf("result %s, want %s (%s)", res, tc.want, info)
			}
			if !reflect.DeepEqual(info.Illegal, tc.illegal) {
				t.Errorf("illegal accounts %v, want %v", info.Illegal, tc.illegal)
			}
		})
	}
}

func TestCheckWritesVisualization(t *testing.T) {
	dir := t.TempDir()
	ops := []linear.Op{
		dep(0, "acc-1", 10, "r1", 0, 10, ok(10)),
		dep(0, "acc-1", 10, "r1", 20, 30, ok(20)),
	}
	res, info, err := linear.Check(ops, 10*time.Second, dir)
	if err != nil || res != porcupine.Illegal {
		t.Fatalf("Check: %s, %v", res, err)
	}
	if info.Visualization == "" || !strings.HasPrefix(info.Visualization, dir) {
		t.Fatalf("visualisation %q, want a file in %s", info.Visualization, dir)
	}
	b, err := os.ReadFile(info.Visualization)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<html", "deposit(10, ref r1)"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("visualisation lacks %q", want)
		}
	}
	// A linearizable history writes nothing.
	if res, info, err := linear.Check(ops[:1], 10*time.Second, dir); res != porcupine.Ok || info.Visualization != "" || err != nil {
		t.Errorf("Check of a good history: %s, %q, %v", res, info.Visualization, err)
	}
}

func TestRecorder(t *testing.T) {
	r := linear.NewRecorder()
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.NewClient()
			for i := range each {
				in := linear.Input{Account: "a", Kind: linear.Deposit, Amount: 1, Ref: string(rune('A'+w)) + string(rune('0'+i%10)) + string(rune('a'+i/10))}
				id := r.Invoke(c, in)
				if i == each-1 && w == 0 {
					continue // never returns: Unknown
				}
				r.Return(id, linear.Output{Result: linear.Rejected, Reason: linear.OtherRejection}, "")
			}
		}()
	}
	wg.Wait()
	ops := r.Ops()
	if len(ops) != workers*each {
		t.Fatalf("%d ops, want %d", len(ops), workers*each)
	}
	clients := map[int]bool{}
	for i, op := range ops {
		clients[op.Client] = true
		if i > 0 && op.Call < ops[i-1].Call {
			t.Fatalf("ops not ordered by call time at %d", i)
		}
		if op.Output.Result != linear.Unknown && op.Return < op.Call {
			t.Fatalf("op %d returns before its call", i)
		}
	}
	if len(clients) != workers {
		t.Errorf("%d clients, want %d", len(clients), workers)
	}
	if res, info, err := r.Check(10*time.Second, ""); res != porcupine.Ok || err != nil || info.Unknown != 1 {
		t.Errorf("Check: %s %v %s", res, err, info)
	}
}
