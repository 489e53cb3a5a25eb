// Package actors is Troupe's Go programming model: event-sourced entities on
// the write side (command actors) and projections with queries on the read
// side (CQRS).
//
// An entity kind is a state type plus pure functions: command handlers decide
// events from (state, command), event appliers fold events into state. The
// runtime runs each entity as a protoactor-go actor that recovers its state
// from the journal, handles one command at a time, appends the decided events
// (acknowledged once durable) and replies with the position of its last
// event in the log (Outcome.Token: a consistency token).
//
//	type Account struct{ Balance int64 }
//	type Deposit struct{ Amount int64 }
//	type Deposited struct{ Amount int64 }
//
//	account := actors.NewKind("account", func(id string) Account { return Account{} })
//	actors.Handle(account, func(s Account, c Deposit) (actors.Decision, error) {
//		return actors.Emit(Deposited{c.Amount}), nil
//	})
//	actors.On(account, func(s Account, e Deposited) Account { s.Balance += e.Amount; return s })
//
// The read side is a set of named projections, each consuming the journal's
// log (one partition on a single node, several in a cluster) from its
// checkpoints into a read store separate from the journal, and named queries
// served from those read models. A query may pass a consistency token and
// waits until its projection has reached it, which gives read-your-writes
// across the two sides.
//
// Where entities live is the Placement's business (LocalPlacement on a
// single node; the cluster plugs in its own and a Forwarder): a command for
// an entity another node owns is forwarded there, and its sidecar plugins
// run on the owner.
package actors
