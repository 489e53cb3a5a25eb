package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// entityBehavior is one live entity: the state machine behind an actor.
// Its methods run on the actor's goroutine only.
type entityBehavior interface {
	recover(ctx context.Context) error
	handle(ctx context.Context, cmd *troupev1.Command, keyUnused bool) (*Outcome, error)
	fireDue(ctx context.Context, now time.Time) error
	snapshotDue() bool
	snapshot(ctx context.Context) error
}

// Outcome is the result of a command that was handled.
type Outcome struct {
	// Reply is the handler's reply encoded as JSON (nil when none).
	Reply []byte
	// Sequence is the stream's last sequence after the command.
	Sequence uint64
	// Partition is the partition of the log the entity's events are in,
	// and Position the position in it of the command's last event (or of
	// the stream's last event when the command appended nothing). On a
	// single node the partition is 0 and the position global.
	Partition int
	Position  uint64
	// Events are the types of the appended events, in order.
	Events []string
	// Duplicate reports a repeated idempotency key: nothing was appended
	// and Reply is the original reply.
	Duplicate bool
}

// Token is the consistency token of the command's last event: a query
// given it sees the command's effect.
func (o *Outcome) Token() journal.Token { return journal.TokenAt(o.Partition, o.Position) }

// System event types, recorded in the entity's own stream with the tag
// timersTag. They are the runtime's, not the domain's: appliers never see
// them. Go type names cannot start with '$', so they cannot collide.
const (
	evTimerScheduled = "$TimerScheduled"
	evTimerFired     = "$TimerFired"
	evTimerCancelled = "$TimerCancelled"
	timersTag        = "$timers"
)

// timerRecord is a pending timer as recorded in the stream.
type timerRecord struct {
	ID      string          `json:"id"`
	At      int64           `json:"at"` // Unix nanoseconds
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
	// Reason says why a timer fired without effect (rejected, panicked).
	Reason string `json:"reason,omitempty"`
}

type entity[S any] struct {
	kind    *Kind[S]
	rt      *Runtime
	id      string
	stream  string
	state   S
	seq     uint64
	pos     uint64
	snapSeq uint64
	timers  map[string]timerRecord
}

func (k *Kind[S]) newEntity(rt *Runtime, id string) entityBehavior {
	return &entity[S]{kind: k, rt: rt, id: id, stream: journal.StreamID(k.name, id)}
}

func (e *entity[S]) snapshotEvery() int {
	if e.kind.snapshotEvery != 0 {
		return e.kind.snapshotEvery
	}
	return e.rt.cfg.SnapshotEvery
}

// snapshotEnvelope is what a snapshot's data holds.
type snapshotEnvelope struct {
	V        int             `json:"v"`
	Position uint64          `json:"position"`
	State    json.RawMessage `json:"state"`
	Timers   []timerRecord   `json:"timers,omitempty"`
}

// recover rebuilds the state from the journal: the latest snapshot, if
// any, then every later event of the stream in order.
func (e *entity[S]) recover(ctx context.Context) error {
	e.state, e.seq, e.pos, e.snapSeq, e.timers = e.kind.initial(e.id), 0, 0, 0, nil
	snap, err := e.rt.journal.LoadSnapshot(ctx, e.stream)
	switch {
	case err == nil:
		var env snapshotEnvelope
		if err := json.Unmarshal(snap.Data, &env); err != nil {
			return fmt.Errorf("recover %s: snapshot at sequence %d does not decode: %w", e.stream, snap.Sequence, err)
		}
		if env.V != 1 {
			return fmt.Errorf("recover %s: snapshot at sequence %d has format version %d; this build reads version 1", e.stream, snap.Sequence, env.V)
		}
		if err := json.Unmarshal(env.State, &e.state); err != nil {
			return fmt.Errorf("recover %s: snapshot state at sequence %d does not decode: %w", e.stream, snap.Sequence, err)
		}
		e.seq, e.snapSeq, e.pos = snap.Sequence, snap.Sequence, env.Position
		for _, t := range env.Timers {
			e.setTimer(t)
		}
	case !errors.Is(err, journal.ErrNotFound):
		return fmt.Errorf("recover %s: %w", e.stream, err)
	}
	for ev, err := range e.rt.journal.Read(ctx, e.stream, e.seq+1, 0) {
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
	e.seq, e.pos = ev.Sequence, ev.Position
	if len(ev.Type) > 0 && ev.Type[0] == '$' {
		return e.applySystem(ev.Type, ev.Payload)
	}
	f, ok := e.kind.events[ev.Type]
	if !ok {
		return fmt.Errorf("recover %s: event %d has type %q with no applier", e.stream, ev.Sequence, ev.Type)
	}
	v, err := f.decode(ev.Payload)
	if err != nil {
		return fmt.Errorf("recover %s: event %d (%s) does not decode: %w", e.stream, ev.Sequence, ev.Type, err)
	}
	e.state = f.apply(e.state, v)
	return nil
}

func (e *entity[S]) applySystem(typ string, payload []byte) error {
	var t timerRecord
	if err := json.Unmarshal(payload, &t); err != nil {
		return fmt.Errorf("%s: %s event does not decode: %w", e.stream, typ, err)
	}
	switch typ {
	case evTimerScheduled:
		e.setTimer(t)
	case evTimerFired, evTimerCancelled:
		delete(e.timers, t.ID)
	default:
		return fmt.Errorf("%s: unknown system event %q", e.stream, typ)
	}
	return nil
}

func (e *entity[S]) setTimer(t timerRecord) {
	if e.timers == nil {
		e.timers = map[string]timerRecord{}
	}
	e.timers[t.ID] = t
}

// handle runs one command. keyUnused says that the command's idempotency
// key cannot have been recorded (see Command.key_unused): it is not looked
// up, here or by the append.
func (e *entity[S]) handle(ctx context.Context, cmd *troupev1.Command, keyUnused bool) (*Outcome, error) {
	c, ok := e.kind.commands[cmd.GetType()]
	if !ok {
		return nil, &UnknownCommandError{Kind: e.kind.name, Type: cmd.GetType()}
	}
	// A repeat of a command that already took effect returns its first
	// reply before the handler runs: the state has moved on since, and
	// deciding again could reject (or double) what was already done.
	if key := cmd.GetIdempotencyKey(); key != "" && !keyUnused {
		res, ok, err := e.rt.journal.Idempotent(ctx, e.stream, key)
		if err != nil {
			return nil, err
		}
		if ok {
			return &Outcome{Reply: res.Reply, Sequence: res.LastSequence, Position: res.LastPosition, Duplicate: true}, nil
		}
	}
	v, err := c.decode(cmd.GetPayload())
	if err != nil {
		return nil, &DecodeError{Kind: e.kind.name, Type: cmd.GetType(), Err: err}
	}
	d, err := e.decide(c, v)
	if err != nil {
		return nil, err
	}
	return e.commit(ctx, cmd.GetType(), idemKey{cmd.GetIdempotencyKey(), keyUnused}, d, nil, cmd.GetTrace())
}

// idemKey is a command's idempotency key, and whether it is known never
// to have been used (the append then does not look it up).
type idemKey struct {
	key    string
	unused bool
}

// commit appends a decision (and extra system events) and applies it.
// The command's trace context, if any, is recorded in each event's
// metadata ("traceparent", "tracestate"), so that readers of the log and
// subscribers of the published events continue the trace.
func (e *entity[S]) commit(ctx context.Context, cmdType string, key idemKey, d Decision, extra []journal.Event, trace *troupev1.TraceContext) (*Outcome, error) {
	reply, err := encodeReply(d.Reply)
	if err != nil {
		return nil, fmt.Errorf("actors: %s: reply of %s: %w", e.stream, cmdType, err)
	}
	if e.rt.cfg.Tracer != nil {
		// The events name the turn's span: their projections' spans
		// are its children.
		trace = eventTrace(ctx, trace)
	}
	events := make([]journal.Event, 0, len(d.Events)+len(d.Schedule)+len(d.Cancel)+len(extra))
	names := make([]string, 0, len(d.Events))
	for _, ev := range d.Events {
		name, ok := e.kind.names[reflect.TypeOf(ev)]
		if !ok {
			return nil, fmt.Errorf("actors: %s: handler of %s emitted %T, which has no applier", e.stream, cmdType, ev)
		}
		p, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("actors: %s: encode %s: %w", e.stream, name, err)
		}
		je := journal.Event{Type: name, Payload: p}
		if e.kind.tags != nil {
			je.Tags = e.kind.tags(ev)
		}
		if tp := trace.GetTraceparent(); tp != "" {
			je.Metadata = map[string]string{"traceparent": tp}
			if ts := trace.GetTracestate(); ts != "" {
				je.Metadata["tracestate"] = ts
			}
		}
		events = append(events, je)
		names = append(names, name)
	}
	sys, err := e.timerEvents(d)
	if err != nil {
		return nil, err
	}
	events = append(events, sys...)
	events = append(events, extra...)
	if len(events) == 0 {
		return &Outcome{Reply: reply, Sequence: e.seq, Position: e.pos}, nil
	}
	req := journal.AppendRequest{Stream: e.stream, Expected: e.seq, Events: events}
	if key.key != "" {
		req.IdempotencyKey, req.Reply, req.KeyUnused = key.key, reply, key.unused
	}
	start := time.Now()
	actx, span := e.rt.appendSpan(ctx, &req)
	res, err := e.rt.journal.Append(actx, req)
	e.rt.appended(e.kind.name, start, span, res, err)
	if err != nil {
		// Whatever happened, our view of the stream may be stale now (a
		// conflict, or an append whose outcome we do not know): rebuild it.
		if rerr := e.recover(ctx); rerr != nil {
			// recover has reset the state: the actor must not answer
			// from it (recoveryError makes it recover again first).
			return nil, errors.Join(err, &recoveryError{err: rerr})
		}
		return nil, err
	}
	if res.Duplicate {
		return &Outcome{Reply: res.Reply, Sequence: res.LastSequence, Position: res.LastPosition, Duplicate: true}, nil
	}
	for _, ev := range d.Events {
		e.state = e.kind.events[e.kind.names[reflect.TypeOf(ev)]].apply(e.state, ev)
	}
	for _, ev := range events[len(d.Events):] {
		if err := e.applySystem(ev.Type, ev.Payload); err != nil {
			return nil, err
		}
	}
	e.seq, e.pos = res.LastSequence, res.LastPosition
	return &Outcome{Reply: reply, Sequence: e.seq, Position: e.pos, Events: names}, nil
}

// timerEvents turns a decision's timers into system events.
func (e *entity[S]) timerEvents(d Decision) ([]journal.Event, error) {
	var out []journal.Event
	now := e.rt.now()
	for _, t := range d.Schedule {
		if t.ID == "" {
			return nil, fmt.Errorf("actors: %s: a timer needs an ID", e.stream)
		}
		name := typeName(reflect.TypeOf(t.Command))
		if _, ok := e.kind.commands[name]; !ok {
			return nil, fmt.Errorf("actors: %s: timer %q: kind %q has no command %q", e.stream, t.ID, e.kind.name, name)
		}
		p, err := json.Marshal(t.Command)
		if err != nil {
			return nil, fmt.Errorf("actors: %s: timer %q: %w", e.stream, t.ID, err)
		}
		at := t.At
		if at.IsZero() {
			at = now.Add(t.After)
		}
		rec, _ := json.Marshal(timerRecord{ID: t.ID, At: at.UnixNano(), Type: name, Payload: p})
		out = append(out, journal.Event{Type: evTimerScheduled, Payload: rec, Tags: []string{timersTag}})
	}
	for _, id := range d.Cancel {
		if _, ok := e.timers[id]; !ok {
			continue
		}
		rec, _ := json.Marshal(timerRecord{ID: id})
		out = append(out, journal.Event{Type: evTimerCancelled, Payload: rec, Tags: []string{timersTag}})
	}
	return out, nil
}

// fireDue delivers every timer whose time has come, oldest first. Each
// firing appends its command's events together with the $TimerFired event,
// so a timer takes effect once even if the node crashes while firing it.
func (e *entity[S]) fireDue(ctx context.Context, now time.Time) error {
	var due []timerRecord
	for _, t := range e.timers {
		if t.At <= now.UnixNano() {
			due = append(due, t)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].At < due[j].At || due[i].At == due[j].At && due[i].ID < due[j].ID })
	for _, t := range due {
		if _, pending := e.timers[t.ID]; !pending {
			continue // cancelled by an earlier timer's command
		}
		var d Decision
		c, ok := e.kind.commands[t.Type]
		var reason string
		if !ok {
			reason = fmt.Sprintf("kind %q has no command %q", e.kind.name, t.Type)
		} else if v, err := c.decode(t.Payload); err != nil {
			reason = fmt.Sprintf("command does not decode: %v", err)
		} else if d, err = e.decide(c, v); err != nil {
			reason = err.Error()
			d = Decision{}
		}
		fired, _ := json.Marshal(timerRecord{ID: t.ID, At: t.At, Type: t.Type, Reason: reason})
		extra := []journal.Event{{Type: evTimerFired, Payload: fired, Tags: []string{timersTag}}}
		if reason != "" {
			e.rt.log.Warn("timer fired without effect", "actor", e.stream, "timer", t.ID, "err", reason)
		}
		if _, err := e.commit(ctx, t.Type, idemKey{}, d, extra, nil); err != nil {
			return fmt.Errorf("fire timer %q of %s: %w", t.ID, e.stream, err)
		}
	}
	return nil
}

func (e *entity[S]) snapshotDue() bool {
	n := e.snapshotEvery()
	return n > 0 && e.seq-e.snapSeq >= uint64(n)
}

// snapshot saves the state as of the last applied event.
func (e *entity[S]) snapshot(ctx context.Context) error {
	state, err := json.Marshal(e.state)
	if err != nil {
		return fmt.Errorf("snapshot %s: state does not encode: %w", e.stream, err)
	}
	env := snapshotEnvelope{V: 1, Position: e.pos, State: state}
	for _, t := range e.timers {
		env.Timers = append(env.Timers, t)
	}
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	if err := e.rt.journal.SaveSnapshot(ctx, journal.Snapshot{Stream: e.stream, Sequence: e.seq, Data: data}); err != nil {
		return fmt.Errorf("snapshot %s: %w", e.stream, err)
	}
	e.snapSeq = e.seq
	return nil
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
	// keyUnused: the command's key cannot have been recorded (a forwarded
	// command whose sender generated the key: Command.key_unused).
	keyUnused bool

	answered bool // set by the actor when it replies
}

// wake asks an entity to fire its due timers.
type wake struct{}

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
	// epoch is the shard's ownership epoch when the entity recovered (a
	// cluster; 0 on a single node). A command under another epoch means
	// the shard went away and came back: other owners may have appended
	// meanwhile, so the entity recovers again before it answers (even a
	// command that appends nothing must not read a stale state).
	epoch uint64
}

func (a *entityActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		if d := a.rt.cfg.PassivateAfter; d > 0 {
			c.SetReceiveTimeout(d)
		}
	case *actor.ReceiveTimeout:
		if a.rt.passivate(a.ref) {
			c.Stop(c.Self())
		}
	case *delivery:
		// A panic past the handler's own recovery still lets the
		// command's mailbox place go.
		defer func() {
			if !m.answered {
				a.ref.inflight.Add(-1)
			}
		}()
		if m.ctx.Err() != nil {
			a.answer(m, result{err: m.ctx.Err()})
			return
		}
		if err := a.ensureRecovered(); err != nil {
			a.answer(m, result{err: err})
			return
		}
		// Appends run with the runtime's context, not the caller's: once
		// a command reaches the journal the entity must learn its outcome
		// even if the caller has gone away.
		ctx := a.rt.ctx
		var span trace.Span
		if a.rt.cfg.Tracer != nil {
			ctx, span = a.rt.startTurn(m.ctx, m.cmd, a.ref.stream) // nil span: sampled out
		}
		out, err := a.b.handle(ctx, m.cmd, m.keyUnused)
		if span != nil {
			EndSpan(span, err)
		}
		a.afterPanic(err)
		a.afterFailedRecovery(err)
		a.answer(m, result{out: out, err: err})
		a.maybeSnapshot()
	case *wake:
		defer a.ref.inflight.Add(-1)
		if err := a.ensureRecovered(); err != nil {
			return
		}
		if err := a.b.fireDue(a.rt.ctx, a.rt.now()); err != nil {
			a.rt.log.Error("timer failed", "actor", a.ref.stream, "err", err)
			a.afterFailedRecovery(err)
		}
		a.maybeSnapshot()
	}
}

// answer replies to a delivered command. The command stops counting
// against the mailbox first: a caller that sends again as soon as it has
// its answer finds room (a snapshot after the reply delays the next turn,
// it does not fill the mailbox).
func (a *entityActor) answer(m *delivery, r result) {
	m.answered = true
	a.ref.inflight.Add(-1)
	m.reply <- r
}

func (a *entityActor) ensureRecovered() error {
	epoch := a.rt.shardEpoch(a.ref.index)
	if a.recovered && epoch == a.epoch {
		return nil
	}
	if err := a.b.recover(a.rt.ctx); err != nil {
		a.rt.log.Error("entity recovery failed", "actor", a.ref.stream, "err", err)
		return err
	}
	a.recovered, a.epoch = true, epoch
	return nil
}

// afterPanic rebuilds the entity from the journal after its handler
// panicked, so no half-changed state survives.
func (a *entityActor) afterPanic(err error) {
	var pe *PanicError
	if !errors.As(err, &pe) {
		return
	}
	a.rt.log.Error("command handler panicked", "actor", a.ref.stream, "err", pe.Value, "stack", string(pe.Stack))
	if rerr := a.b.recover(a.rt.ctx); rerr != nil {
		a.recovered = false
	}
}

// recoveryError is a recovery that failed after a failed append: the
// entity's state was reset and is not the journal's, so the actor
// recovers again before its next command.
type recoveryError struct{ err error }

func (e *recoveryError) Error() string { return e.err.Error() }
func (e *recoveryError) Unwrap() error { return e.err }

// afterFailedRecovery makes the next command recover the entity first if
// err says its state was reset by a recovery that failed (an append
// failed, and so did the read of the journal after it, as when the
// journal's leader moves): without it, every later command was decided
// against the initial state ("account is not open") until the entity
// passivated.
func (a *entityActor) afterFailedRecovery(err error) {
	var re *recoveryError
	if errors.As(err, &re) {
		a.recovered = false
	}
}

func (a *entityActor) maybeSnapshot() {
	if a.recovered && a.b.snapshotDue() {
		if err := a.b.snapshot(a.rt.ctx); err != nil {
			a.rt.log.Error("snapshot failed", "actor", a.ref.stream, "err", err)
		}
	}
}
