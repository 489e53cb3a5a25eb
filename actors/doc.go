// Package actors is Troupe's Go programming model: event-sourced entities on
// the write side (command actors) and projections with queries on the read
// side (CQRS).
//
// An entity kind is a state type plus pure functions: command handlers decide
// events from (state, command), event appliers fold events into state. The
// runtime runs each entity as a protoactor-go actor that recovers its state
// from the journal, handles one command at a time, appends the decided events
// (acknowledged once durable) and replies with the global position of its last
// event.
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
// global log from its checkpoint into a read store separate from the journal,
// and named queries served from those read models. A query may pass a minimum
// global position and waits until its projection has reached it, which gives
// read-your-writes across the two sides.
package actors
