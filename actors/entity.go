package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// entityBehavior is one live entity: the state machine behind an actor.
// Its methods run on the actor's goroutine only.
type entityBehavior interface {
	recover(ctx context.Context) error
	handle(ctx context.Context, cmd *troupev1.Command) (*Outcome, error)
}

// Outcome is the result of a command that was handled.
type Outcome struct {
	// Reply is the handler's reply encoded as JSON (nil when none).
	Reply []byte
	// Sequence is the stream's last sequence after the command.
	Sequence uint64
	// Position is the global position of the command's last event (or of
	// the stream's last event when the command appended nothing).
	Position uint64
	// Events are the types of the appended events, in order.
	Events []string
	// Duplicate reports a repeated idempotency key: nothing was appended
	// and Reply is the original reply.
	Duplicate bool
}

type entity[S any] struct {
	kind   *Kind[S]
	rt     *Runtime
	id     string
	stream string
	state  S
	seq    uint64
	pos    uint64
}

func (k *Kind[S]) newEntity(rt *Runtime, id string) entityBehavior {
	return &entity[S]{kind: k, rt: rt, id: id, stream: journal.StreamID(k.name, id)}
}

// recover rebuilds the state from the journal: the initial state, then
// every event of the stream in order.
func (e *entity[S]) recover(ctx context.Context) error {
	e.state, e.seq, e.pos = e.kind.initial(e.id), 0, 0
	for ev, err := range e.rt.journal.Read(ctx, e.stream, 1, 0) {
		if err != nil {
			return fmt.Errorf("recover %s: %w", e.stream, err)
		}
		if err := e.applyStored(ev); err != nil {
			return err
		}
	}
	return nil
}

func (e *entity[S]) applyStored(ev journal.Event) error {
	f, ok := e.kind.events[ev.Type]
	if !ok {
		return fmt.Errorf("recover %s: event %d has type %q with no applier", e.stream, ev.Sequence, ev.Type)
	}
	v, err := f.decode(ev.Payload)
	if err != nil {
		return fmt.Errorf("recover %s: event %d (%s) does not decode: %w", e.stream, ev.Sequence, ev.Type, err)
	}
	e.state = f.apply(e.state, v)
	e.seq, e.pos = ev.Sequence, ev.Position
	return nil
}

func (e *entity[S]) handle(ctx context.Context, cmd *troupev1.Command) (out *Outcome, err error) {
	c, ok := e.kind.commands[cmd.GetType()]
	if !ok {
		return nil, &UnknownCommandError{Kind: e.kind.name, Type: cmd.GetType()}
	}
	v, err := c.decode(cmd.GetPayload())
	if err != nil {
		return nil, &DecodeError{Kind: e.kind.name, Type: cmd.GetType(), Err: err}
	}
	d, err := e.decide(c, v)
	if err != nil {
		return nil, err
	}
	reply, err := encodeReply(d.Reply)
	if err != nil {
		return nil, fmt.Errorf("actors: %s: reply of %s: %w", e.stream, cmd.GetType(), err)
	}
	if len(d.Events) == 0 {
		return &Outcome{Reply: reply, Sequence: e.seq, Position: e.pos}, nil
	}
	events := make([]journal.Event, len(d.Events))
	names := make([]string, len(d.Events))
	for i, ev := range d.Events {
		name, ok := e.kind.names[reflect.TypeOf(ev)]
		if !ok {
			return nil, fmt.Errorf("actors: %s: handler of %s emitted %T, which has no applier", e.stream, cmd.GetType(), ev)
		}
		p, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("actors: %s: encode %s: %w", e.stream, name, err)
		}
		events[i] = journal.Event{Type: name, Payload: p}
		if e.kind.tags != nil {
			events[i].Tags = e.kind.tags(ev)
		}
		names[i] = name
	}
	req := journal.AppendRequest{Stream: e.stream, Expected: e.seq, Events: events}
	if key := cmd.GetIdempotencyKey(); key != "" {
		req.IdempotencyKey, req.Reply = key, reply
	}
	res, err := e.rt.journal.Append(ctx, req)
	if err != nil {
		// Whatever happened, our view of the stream may be stale now (a
		// conflict, or an append whose outcome we do not know): rebuild it.
		if rerr := e.recover(ctx); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	if res.Duplicate {
		return &Outcome{Reply: res.Reply, Sequence: res.LastSequence, Position: res.LastPosition, Duplicate: true}, nil
	}
	for _, ev := range d.Events {
		e.state = e.kind.events[e.kind.names[reflect.TypeOf(ev)]].apply(e.state, ev)
	}
	e.seq, e.pos = res.LastSequence, res.LastPosition
	return &Outcome{Reply: reply, Sequence: e.seq, Position: e.pos, Events: names}, nil
}

// decide runs the user's handler; a panic fails this command only.
func (e *entity[S]) decide(c commandFunc[S], cmd any) (d Decision, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Stream: e.stream, Value: r, Stack: debug.Stack()}
		}
	}()
	return c.handle(e.state, cmd)
}

// PanicError is a command whose handler panicked. The command fails, the
// entity rebuilds its state from the journal, other entities are unaffected.
type PanicError struct {
	Stream string
	Value  any
	Stack  []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("actors: %s: command handler panicked: %v", e.Stream, e.Value)
}

func encodeReply(r any) ([]byte, error) {
	if r == nil {
		return nil, nil
	}
	return json.Marshal(r)
}

// delivery is the message an entity actor receives for one command.
type delivery struct {
	ctx   context.Context
	cmd   *troupev1.Command
	reply chan<- result
}

type result struct {
	out *Outcome
	err error
}

// entityActor adapts an entityBehavior to protoactor.
type entityActor struct {
	b         entityBehavior
	rt        *Runtime
	ref       *entityRef
	recovered bool
}

func (a *entityActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *delivery:
		a.ref.inflight.Add(-1)
		if m.ctx.Err() != nil {
			m.reply <- result{err: m.ctx.Err()}
			return
		}
		if !a.recovered {
			if err := a.b.recover(a.rt.ctx); err != nil {
				a.rt.log.Error("entity recovery failed", "actor", a.ref.stream, "err", err)
				m.reply <- result{err: err}
				return
			}
			a.recovered = true
		}
		// Appends run with the runtime's context, not the caller's: once
		// a command reaches the journal the entity must learn its outcome
		// even if the caller has gone away.
		out, err := a.b.handle(a.rt.ctx, m.cmd)
		var pe *PanicError
		if errors.As(err, &pe) {
			a.rt.log.Error("command handler panicked", "actor", a.ref.stream, "err", pe.Value, "stack", string(pe.Stack))
			if rerr := a.b.recover(a.rt.ctx); rerr != nil {
				a.recovered = false
			}
		}
		m.reply <- result{out: out, err: err}
	}
}
