package linear_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/troupe-dev/troupe/cluster/clustertest/linear"
)

// history simulates n operations on one account by w overlapping clients,
// unknown of whose writes end Unknown (applied all the same, as a lost
// reply would be); with illegal, a last deposit answers a balance the
// account never had, so that the checker must exhaust its search.
func history(w, n, unknown int, illegal bool, seed uint64) []linear.Op {
	rng := rand.New(rand.NewPCG(seed, 1))
	var (
		ops []linear.Op
		bal int64
		t   int64
	)
	for i := range n {
		t += 10
		kind, amt := linear.Deposit, 1+rng.Int64N(10)
		if rng.IntN(3) == 0 && amt <= bal {
			kind = linear.Withdraw
			bal -= amt
		} else {
			bal += amt
		}
		op := linear.Op{
			Client: i % w,
			Input:  linear.Input{Account: "a", Kind: kind, Amount: amt, Ref: fmt.Sprintf("r%d", i)},
			Output: linear.Output{Result: linear.OK, Balance: bal, BalanceKnown: true},
			Call:   t - rng.Int64N(int64(10*w)), Return: t + rng.Int64N(int64(10*w)),
		}
		if unknown > 0 && rng.IntN(n/unknown) == 0 {
			op.Output = linear.Output{Result: linear.Unknown}
		}
		ops = append(ops, op)
	}
	if illegal {
		ops = append(ops, linear.Op{Client: w, Input: linear.Input{Account: "a", Kind: linear.Deposit, Amount: 1, Ref: "x"},
			Output: linear.Output{Result: linear.OK, Balance: -1, BalanceKnown: true}, Call: t + 100, Return: t + 200})
	}
	return ops
}

// BenchmarkCheck measures the checker on one account's history of 200
// operations: by overlapping clients, Unknown operations, and whether the
// history is linearizable (an illegal one is searched exhaustively).
func BenchmarkCheck(b *testing.B) {
	for _, illegal := range []bool{false, true} {
		for _, w := range []int{2, 8, 16} {
			for _, u := range []int{0, 10, 20} {
				ops := history(w, 200, u, illegal, 42)
				want := porcupine.Ok
				if illegal {
					want = porcupine.Illegal
				}
				b.Run(fmt.Sprintf("illegal=%v/clients=%d/unknown=%d", illegal, w, u), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if res, info, _ := linear.Check(ops, time.Minute, ""); res != want {
							b.Fatalf("%s, want %s: %s", res, want, info)
						}
					}
				})
			}
		}
	}
}
