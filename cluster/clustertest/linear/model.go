package linear

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// OpKind is what an operation does to an account.
type OpKind int

const (
	// Deposit adds Amount to the balance (bank.Deposit).
	Deposit OpKind = iota
	// Withdraw takes Amount from the balance, rejected when the balance
	// does not cover it (bank.Withdraw).
	Withdraw
	// Read returns the balance. The bank has no read command on the write
	// side (its "balance" query reads a projection, which lags), so a read
	// is sent as a Deposit that repeats the account's probe ref: the
	// account recognises the ref, appends nothing and replies with its
	// current balance, through the entity, in order with the other
	// commands. The model gives it exactly the Deposit's semantics, so a
	// probe ref the account forgot would show up as a violation, not be
	// assumed away.
	Read
)

var opKindNames = [...]string{Deposit: "deposit", Withdraw: "withdraw", Read: "read"}

// String returns "deposit", "withdraw" or "read".
func (k OpKind) String() string {
	if k < 0 || int(k) >= len(opKindNames) {
		return fmt.Sprintf("OpKind(%d)", int(k))
	}
	return opKindNames[k]
}

// Input is one operation on one account, as the client sent it.
type Input struct {
	// Account is the account id (the entity id of kind "account"); the
	// model checks each account on its own.
	Account string
	Kind    OpKind
	// Amount is the Deposit's or Withdraw's amount (a Read's is the
	// amount of the probe Deposit it repeats).
	Amount int64
	// Ref is the bank's operation reference: an account applies a ref at
	// most once, and a repeat succeeds without effect.
	Ref string
}

// Result is how an operation ended, as far as the client knows.
type Result int

const (
	// OK: the node acknowledged the operation; Output.Balance is the
	// balance the reply carries.
	OK Result = iota
	// Rejected: the node refused it definitely (nothing was applied by
	// this attempt); Output.Reason says why.
	Rejected
	// Unknown: no definite answer (a timeout, a retryable error, a broken
	// connection): the operation may or may not have happened, now or
	// later.
	Unknown
)

var resultNames = [...]string{OK: "ok", Rejected: "rejected", Unknown: "unknown"}

// String returns "ok", "rejected" or "unknown".
func (r Result) String() string {
	if r < 0 || int(r) >= len(resultNames) {
		return fmt.Sprintf("Result(%d)", int(r))
	}
	return resultNames[r]
}

// Reason classifies a rejection.
type Reason int

const (
	// NoReason is the Reason of results other than Rejected.
	NoReason Reason = iota
	// InsufficientFunds: a Withdraw larger than the balance. The model
	// checks it: legal only where the balance was below the amount.
	InsufficientFunds
	// OtherRejection: any other definite refusal (a plugin's, a closed
	// account, an invalid request). The model takes it as "did not
	// happen" in any state; it is not a linearizability question, and the
	// client counts it so that a test can insist on none.
	OtherRejection
	// NotApplied: a retryable error that, by the test's own rule
	// (Config.NotApplied), says the command was not applied (for example
	// "shard 7 is moving; not applied"). The model takes it as "did not
	// happen", like OtherRejection, so a wrong claim shows up as a
	// violation or in the audit; the client sends the command again.
	NotApplied
)

var reasonNames = [...]string{NoReason: "", InsufficientFunds: "insufficient_funds", OtherRejection: "other", NotApplied: "not_applied"}

// String returns "", "insufficient_funds", "other" or "not_applied".
func (r Reason) String() string {
	if r < 0 || int(r) >= len(reasonNames) {
		return fmt.Sprintf("Reason(%d)", int(r))
	}
	return reasonNames[r]
}

// Output is what the client observed.
type Output struct {
	Result Result
	// Balance is the reply's balance (OK), or the balance an
	// insufficient-funds rejection names when BalanceKnown.
	Balance int64
	// BalanceKnown is set for OK when the reply carried a balance (the
	// model checks it then), and for InsufficientFunds when the
	// rejection's message named the balance.
	BalanceKnown bool
	Reason       Reason
	// Err is the error the client saw (code: message, or a transport
	// error), for the visualisation; the model ignores it.
	Err string
}

// state is one account's state in the model: its balance and the refs it
// has applied. It is immutable: a step that changes it returns a copy. h
// is an order-independent hash of the refs (XOR of their hashes), so that
// Hash and Equal are cheap.
type state struct {
	balance int64
	refs    map[string]struct{}
	h       uint64
}

func (s state) applied(ref string) bool {
	if ref == "" {
		return false
	}
	_, ok := s.refs[ref]
	return ok
}

// with returns s with balance changed by delta and ref recorded.
func (s state) with(delta int64, ref string) state {
	n := state{balance: s.balance + delta, refs: s.refs, h: s.h}
	if ref == "" {
		return n
	}
	n.refs = make(map[string]struct{}, len(s.refs)+1)
	for r := range s.refs {
		n.refs[r] = struct{}{}
	}
	n.refs[ref] = struct{}{}
	n.h ^= refHash(ref)
	return n
}

func refHash(ref string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(ref))
	return h.Sum64()
}

// step is the bank account's sequential specification: what the account
// does with in, from s (bank.Accounts' Deposit and Withdraw handlers, on
// an open account): the next state and the output it would give.
func step(s state, in Input) (state, Output) {
	if s.applied(in.Ref) {
		// A repeated ref succeeds without effect, before any other check.
		return s, Output{Result: OK, Balance: s.balance, BalanceKnown: true}
	}
	if in.Amount <= 0 {
		return s, Output{Result: Rejected, Reason: OtherRejection}
	}
	switch in.Kind {
	case Deposit, Read:
		n := s.with(in.Amount, in.Ref)
		return n, Output{Result: OK, Balance: n.balance, BalanceKnown: true}
	case Withdraw:
		if in.Amount > s.balance {
			return s, Output{Result: Rejected, Reason: InsufficientFunds, Balance: s.balance, BalanceKnown: true}
		}
		n := s.with(-in.Amount, in.Ref)
		return n, Output{Result: OK, Balance: n.balance, BalanceKnown: true}
	}
	return s, Output{Result: Rejected, Reason: OtherRejection}
}

// modelStep decides whether the account can take in and answer out from
// s. The encoding of what the client did not see:
//
//   - Unknown: the operation takes effect at its linearization point, with
//     whatever output the model gives. Its return time is the end of the
//     history (see Check), so the checker may also place it after every
//     other operation, where its effect is seen by nothing: that is "it
//     never happened". Both readings are open to the checker.
//   - Rejected with OtherRejection or NotApplied: did not happen; legal in
//     any state.
func modelStep(s state, in Input, out Output) (bool, state) {
	next, want := step(s, in)
	switch out.Result {
	case Unknown:
		return true, next
	case OK:
		return want.Result == OK && (!out.BalanceKnown || want.Balance == out.Balance), next
	case Rejected:
		switch out.Reason {
		case InsufficientFunds:
			ok := want.Result == Rejected && want.Reason == InsufficientFunds &&
				(!out.BalanceKnown || out.Balance == want.Balance)
			return ok, s
		case OtherRejection, NotApplied:
			return true, s
		}
	}
	return false, s
}

// Model is the porcupine model of bank accounts: a history of Input and
// Output values, partitioned by account, each account starting open with
// a balance of 0 and no refs. Step, Equal and Hash are pure and safe for
// concurrent use (the checker runs partitions in parallel).
func Model() porcupine.Model {
	return porcupine.Model{
		Partition:      partition,
		PartitionEvent: partitionEvents,
		Init:           func() any { return state{} },
		Step: func(s, in, out any) (bool, any) {
			return modelStep(s.(state), in.(Input), out.(Output))
		},
		Equal: func(a, b any) bool {
			x, y := a.(state), b.(state)
			if x.balance != y.balance || x.h != y.h || len(x.refs) != len(y.refs) {
				return false
			}
			for r := range x.refs {
				if _, ok := y.refs[r]; !ok {
					return false
				}
			}
			return true
		},
		Hash: func(s any) uint64 {
			x := s.(state)
			return x.h ^ uint64(x.balance)*0x9e3779b97f4a7c15
		},
		DescribeOperation: func(in, out any) string { return describe(in.(Input), out.(Output)) },
		DescribeState: func(s any) string {
			x := s.(state)
			return fmt.Sprintf("balance %d, %d refs applied", x.balance, len(x.refs))
		},
		DescribeOperationMetadata: func(m any) string {
			if m == nil {
				return ""
			}
			return fmt.Sprint(m)
		},
	}
}

func describe(in Input, out Output) string {
	var b strings.Builder
	switch in.Kind {
	case Read:
		fmt.Fprintf(&b, "read (deposit %d, ref %s)", in.Amount, in.Ref)
	default:
		fmt.Fprintf(&b, "%s(%d, ref %s)", in.Kind, in.Amount, in.Ref)
	}
	b.WriteString(" → ")
	switch out.Result {
	case OK:
		fmt.Fprintf(&b, "%d", out.Balance)
	case Rejected:
		fmt.Fprintf(&b, "rejected: %s", out.Reason)
		if out.Reason == InsufficientFunds && out.BalanceKnown {
			fmt.Fprintf(&b, " (balance %d)", out.Balance)
		}
	default:
		b.WriteString(out.Result.String())
	}
	return b.String()
}

func partition(h []porcupine.Operation) [][]porcupine.Operation {
	by := map[string][]porcupine.Operation{}
	for _, op := range h {
		a := op.Input.(Input).Account
		by[a] = append(by[a], op)
	}
	out := make([][]porcupine.Operation, 0, len(by))
	for _, a := range sortedKeys(by) {
		out = append(out, by[a])
	}
	return out
}

func partitionEvents(h []porcupine.Event) [][]porcupine.Event {
	// A return event carries the Output, not the account: map the ids of
	// the calls first.
	account := map[int]string{}
	for _, e := range h {
		if e.Kind == porcupine.CallEvent {
			account[e.Id] = e.Value.(Input).Account
		}
	}
	by := map[string][]porcupine.Event{}
	for _, e := range h {
		a := account[e.Id]
		by[a] = append(by[a], e)
	}
	out := make([][]porcupine.Event, 0, len(by))
	for _, a := range sortedKeys(by) {
		out = append(out, by[a])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
