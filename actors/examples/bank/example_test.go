package bank_test

import (
	"fmt"

	"github.com/troupe-dev/troupe/actors/examples/bank"
)

// A withdrawal the balance does not cover is rejected, and nothing is
// decided.
func ExampleAccounts() {
	s, _ := bank.Accounts.Apply(bank.Accounts.Initial("acc-1"), bank.Opened{Owner: "ada"}, bank.Deposited{Amount: 70})
	_, err := bank.Accounts.Decide(s, bank.Withdraw{Amount: 71})
	fmt.Println(err)
	d, _ := bank.Accounts.Decide(s, bank.Withdraw{Amount: 30})
	fmt.Printf("%+v %+v\n", d.Events, d.Reply)
	// Output:
	// rejected: insufficient funds: balance 70, withdrawal 71
	// [{Amount:30 Ref:}] {Balance:40}
}

// A transfer whose credit was rejected can only be compensated once the
// process has paid the amount back.
func ExampleTransfers() {
	s, _ := bank.Transfers.Apply(bank.Transfers.Initial("t-1"),
		bank.Started{From: "acc-1", To: "acc-2", Amount: 30},
		bank.Debited{},
		bank.CreditRejected{Reason: "credit of acc-2 rejected: account acc-2 is closed"})
	fmt.Println(s.Status, s.Status.Terminal())
	_, err := bank.Transfers.Decide(s, bank.Complete{})
	fmt.Println(err)
	d, _ := bank.Transfers.Decide(s, bank.Compensate{})
	fmt.Println(d.Reply.(bank.Transfer).Status, d.Reply.(bank.Transfer).Reason)
	// Output:
	// refunding false
	// rejected: transfer t-1 is refunding, not debited
	// compensated credit of acc-2 rejected: account acc-2 is closed
}
