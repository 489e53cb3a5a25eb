package linear_test

import (
	"fmt"
	"time"

	"github.com/troupe-dev/troupe/cluster/clustertest/linear"
)

// A deposit acknowledged with balance 10, then a read that does not see
// it: a lost (or stale) write, which the checker pins to its account.
func ExampleCheck() {
	r := linear.NewRecorder()
	c0, c1 := r.NewClient(), r.NewClient()
	dep := r.Invoke(c0, linear.Input{Account: "acc-1", Kind: linear.Deposit, Amount: 10, Ref: "r1"})
	r.Return(dep, linear.Output{Result: linear.OK, Balance: 10, BalanceKnown: true}, "")
	// The read repeats ref r1: the account answers its balance.
	read := r.Invoke(c1, linear.Input{Account: "acc-1", Kind: linear.Read, Amount: 10, Ref: "r1"})
	r.Return(read, linear.Output{Result: linear.OK, Balance: 0, BalanceKnown: true}, "")

	res, info, err := r.Check(10*time.Second, "")
	fmt.Println(res, info.Illegal, err)
	// Output: Illegal [acc-1] <nil>
}
