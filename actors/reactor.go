package actors

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/journal"
)

// Reactor reacts to events of the global log with side effects, usually
// commands to other entities: process managers and sagas (the bank's
// transfer is one). A reactor consumes the log from a checkpoint kept in the
// read store and advances it after each event, so after a crash it repeats
// at most the event it was handling. Commands it sends should therefore
// carry an idempotency key derived from the event (stream and sequence): the
// repeat then returns the first reply and appends nothing, and every event
// takes effect exactly once.
type Reactor struct {
	// Name identifies the reactor and its checkpoint.
	Name string
	// Filter selects the events it reacts to.
	Filter journal.Filter
	// React handles one event, in global order, on the reactor's own
	// goroutine. Domain outcomes (a rejected command) are for React to
	// handle, e.g. by compensating; a returned error means "try this event
	// again" and is retried with back-off, so return one only for failures
	// that may pass (a node shutting down, a timeout).
	React func(ctx context.Context, ev journal.Event) error
}

// RegisterReactor adds a reactor; call before Start.
func (rt *Runtime) RegisterReactor(r Reactor) error {
	if r.Name == "" || r.React == nil {
		return errors.New("actors: reactor needs a Name and a React")
	}
	return rt.RegisterProjection(Projection{
		Name:   r.Name,
		Filter: r.Filter,
		Apply: func(tx *Tx, ev journal.Event) error {
			ctx := rt.ctx
			if sc := tx.SpanContext(); sc.IsValid() {
				// The reactor's commands continue the event's trace.
				ctx = trace.ContextWithSpanContext(ctx, sc)
			}
			return r.React(ctx, ev)
		},
		perEvent: true,
	})
}
