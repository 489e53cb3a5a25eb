package actors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"time"
)

// Decision is what a command handler decides: the events to append, in
// order, the reply to the sender, and timers to set or cancel. Events must be
// values of types registered on the kind with On. Everything a decision holds
// is appended atomically: the events, the timers, and the command's
// idempotency key.
type Decision struct {
	Events []any
	Reply  any
	// Schedule sets durable timers: each fires its command at the entity
	// itself once, at its time, also across restarts.
	Schedule []Timer
	// Cancel cancels pending timers by ID.
	Cancel []string
}

// Timer is a command an entity schedules for itself.
type Timer struct {
	// ID names the timer within the entity; setting an ID again replaces
	// the pending timer. Required.
	ID string
	// At is when the timer fires. When zero, After is used.
	At time.Time
	// After is the delay from the handling of the command that sets it.
	After time.Duration
	// Command is the command to deliver: a value of a command type of the
	// entity's kind.
	Command any
}

// Emit is a Decision with events and no reply.
func Emit(events ...any) Decision { return Decision{Events: events} }

// RejectedError is a command the domain refused (insufficient funds, a
// closed account, a plugin's verdict). It is the sender's problem, not the
// node's: the API answers it with a 4xx and nothing is appended.
type RejectedError struct {
	Reason string
}

func (e *RejectedError) Error() string { return "rejected: " + e.Reason }

// Reject returns a *RejectedError with a formatted reason.
func Reject(format string, args ...any) error {
	return &RejectedError{Reason: fmt.Sprintf(format, args...)}
}

// Behavior is the type-erased view of a kind that the runtime needs; *Kind
// implements it. It is not meant to be implemented elsewhere.
type Behavior interface {
	// Name is the kind's name, e.g. "account".
	Name() string
	// CommandTypes lists the command type names the kind handles.
	CommandTypes() []string
	command(typ string) (ok, internal bool)
	newEntity(rt *Runtime, id string) entityBehavior
}

// Kind describes one entity kind with state type S. Register handlers with
// Handle and appliers with On before passing it to Runtime.Register; a Kind is
// read-only afterwards and safe for concurrent use.
type Kind[S any] struct {
	name          string
	snapshotEvery int
	initial       func(id string) S
	commands      map[string]commandFunc[S]
	events        map[string]eventFunc[S]
	names         map[reflect.Type]string
	tags          func(ev any) []string
}

type commandFunc[S any] struct {
	decode   func(payload []byte) (any, error)
	handle   func(s S, cmd any) (Decision, error)
	internal bool
}

type eventFunc[S any] struct {
	decode func(payload []byte) (any, error)
	apply  func(s S, ev any) S
}

// NewKind starts the description of an entity kind. initial returns the
// state of an entity that has no events yet.
func NewKind[S any](name string, initial func(id string) S) *Kind[S] {
	if initial == nil {
		initial = func(string) S { var zero S; return zero }
	}
	return &Kind[S]{
		name:     name,
		initial:  initial,
		commands: map[string]commandFunc[S]{},
		events:   map[string]eventFunc[S]{},
		names:    map[reflect.Type]string{},
	}
}

// Name is the kind's name.
func (k *Kind[S]) Name() string { return k.name }

// CommandTypes lists the handled command type names, sorted.
func (k *Kind[S]) CommandTypes() []string {
	out := make([]string, 0, len(k.commands))
	for n := range k.commands {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// SnapshotEvery makes the kind snapshot an entity's state every n events
// (n < 0: never), overriding Config.SnapshotEvery. Snapshots hold the state
// encoded as JSON, so S must round-trip through encoding/json.
func (k *Kind[S]) SnapshotEvery(n int) { k.snapshotEvery = n }

func (k *Kind[S]) command(typ string) (ok, internal bool) {
	c, ok := k.commands[typ]
	return ok, c.internal
}

// Tags sets a function that tags events for the journal's tag index.
func (k *Kind[S]) Tags(f func(ev any) []string) { k.tags = f }

// Initial returns the state of an entity without events.
func (k *Kind[S]) Initial(id string) S { return k.initial(id) }

// typeName is the wire name of a Go type: its bare type name.
func typeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// Handle registers the handler of command type C (named after the Go type,
// e.g. "Deposit"). The handler must be pure: it reads the state and the
// command and returns a decision, with no side effects; it runs on the
// entity's goroutine. A returned error fails the command and appends nothing.
func Handle[S, C any](k *Kind[S], h func(state S, cmd C) (Decision, error)) {
	handle(k, h, false)
}

// HandleInternal registers the handler of a command that only the node
// itself may send: reactors, timers and in-process Go code (Runtime.Send).
// Clients of the API (Runtime.SendExternal) get an *InternalCommandError.
// Process managers use it for the steps they record on their own entities.
func HandleInternal[S, C any](k *Kind[S], h func(state S, cmd C) (Decision, error)) {
	handle(k, h, true)
}

func handle[S, C any](k *Kind[S], h func(state S, cmd C) (Decision, error), internal bool) {
	name := typeName(reflect.TypeFor[C]())
	k.commands[name] = commandFunc[S]{
		decode: func(p []byte) (any, error) {
			var c C
			if len(p) == 0 {
				p = []byte("{}")
			}
			if err := strictUnmarshal(p, &c); err != nil {
				return nil, err
			}
			return c, nil
		},
		handle:   func(s S, cmd any) (Decision, error) { return h(s, cmd.(C)) },
		internal: internal,
	}
}

// InternalCommandError is a client's attempt to send a command registered
// with HandleInternal.
type InternalCommandError struct{ Kind, Type string }

func (e *InternalCommandError) Error() string {
	return fmt.Sprintf("actors: command %q of kind %q is internal: only the node itself sends it", e.Type, e.Kind)
}

// On registers the applier of event type E (named after the Go type, e.g.
// "Deposited"). Appliers fold an event into the state; they must be pure and
// total: an event that was appended is a fact and always applies.
func On[S, E any](k *Kind[S], apply func(state S, ev E) S) {
	t := reflect.TypeFor[E]()
	name := typeName(t)
	k.names[t] = name
	k.events[name] = eventFunc[S]{
		decode: func(p []byte) (any, error) {
			var e E
			if err := json.Unmarshal(p, &e); err != nil {
				return nil, err
			}
			return e, nil
		},
		apply: func(s S, ev any) S { return apply(s, ev.(E)) },
	}
}

// Decide runs the handler of cmd against state without a runtime, as tests
// of pure domain logic do.
func (k *Kind[S]) Decide(state S, cmd any) (Decision, error) {
	name := typeName(reflect.TypeOf(cmd))
	c, ok := k.commands[name]
	if !ok {
		return Decision{}, &UnknownCommandError{Kind: k.name, Type: name}
	}
	return c.handle(state, cmd)
}

// Apply folds events into state without a runtime.
func (k *Kind[S]) Apply(state S, events ...any) (S, error) {
	for _, ev := range events {
		name, ok := k.names[reflect.TypeOf(ev)]
		if !ok {
			return state, fmt.Errorf("actors: kind %q has no applier for event type %T", k.name, ev)
		}
		state = k.events[name].apply(state, ev)
	}
	return state, nil
}

// UnknownCommandError is a command type the kind does not handle.
type UnknownCommandError struct {
	Kind, Type string
}

func (e *UnknownCommandError) Error() string {
	return fmt.Sprintf("actors: kind %q has no command %q", e.Kind, e.Type)
}

// DecodeError is a command payload that does not decode into its type.
type DecodeError struct {
	Kind, Type string
	Err        error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("actors: %s command %q: payload does not decode: %v", e.Kind, e.Type, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// strictUnmarshal decodes JSON and refuses unknown fields and trailing data,
// so a typo in a command is an error rather than a silently ignored field.
func strictUnmarshal(p []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// NotFoundError is a query (or command) about something that does not exist.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string { return e.What + " not found" }

// NotFound returns a *NotFoundError naming what is missing.
func NotFound(format string, args ...any) error {
	return &NotFoundError{What: fmt.Sprintf(format, args...)}
}
