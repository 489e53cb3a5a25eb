package actors

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/troupe-dev/troupe/journal"
)

// Projection builds a read model from the journal's global log.
type Projection struct {
	// Name identifies the projection and namespaces its read model.
	Name string
	// Filter selects the events it consumes (all, one kind, or one tag).
	Filter journal.Filter
	// Apply folds one event into the read model within tx. It runs on the
	// projection's goroutine, one event at a time, in global order. An
	// error stops the projection (it is retried after a back-off) without
	// advancing the checkpoint past the failed event.
	Apply func(tx *Tx, ev journal.Event) error
	// Flush, when set, runs after a batch's Apply calls and before the
	// transaction that advances the checkpoint commits. A projection whose
	// Apply writes somewhere else than the read store (a NATS publisher)
	// makes those writes durable here; an error retries the batch. Such a
	// projection cannot be rebuilt (it would repeat its writes).
	Flush func(ctx context.Context) error

	// committed, when set, runs after a transaction that applied events
	// commits (the runtime's own projections use it).
	committed func()
	// perEvent commits after every event (reactors: a crash repeats at
	// most one event's side effects).
	perEvent bool
}

// Query is a named read served from a projection's read model.
type Query struct {
	// Name is what clients ask for, e.g. "balance".
	Name string
	// Projection is the read model the query reads.
	Projection string
	// Handle answers from a consistent view. params is the JSON the client
	// sent. It runs on the caller's goroutine, concurrently with others.
	Handle func(ctx context.Context, v *View, params json.RawMessage) (any, error)
}

// Answer is a query's result.
type Answer struct {
	Result any
	// Position is the global position the read model had applied.
	Position uint64
}

// UnknownQueryError is a query nobody registered.
type UnknownQueryError struct{ Name string }

func (e *UnknownQueryError) Error() string { return fmt.Sprintf("actors: unknown query %q", e.Name) }

// PositionTimeoutError is a query whose projection did not reach the
// requested position in time.
type PositionTimeoutError struct {
	Query, Projection string
	Want, Reached     uint64
	Head              uint64
	Waited            time.Duration
}

func (e *PositionTimeoutError) Error() string {
	if e.Want > e.Head {
		return fmt.Sprintf("actors: query %q: position %d does not exist yet (the log ends at %d); waited %s", e.Query, e.Want, e.Head, e.Waited)
	}
	return fmt.Sprintf("actors: query %q: projection %q reached position %d, not %d, within %s", e.Query, e.Projection, e.Reached, e.Want, e.Waited)
}

// RegisterProjection adds a projection; call before Start.
func (rt *Runtime) RegisterProjection(p Projection) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if p.Name == "" || p.Apply == nil {
		return errors.New("actors: projection needs a Name and an Apply")
	}
	if _, dup := rt.projections[p.Name]; dup {
		return fmt.Errorf("actors: projection %q registered twice", p.Name)
	}
	rt.projections[p.Name] = &projection{def: p, rt: rt, changed: make(chan struct{})}
	return nil
}

// RegisterQuery adds a query over a registered projection.
func (rt *Runtime) RegisterQuery(q Query) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if q.Name == "" || q.Handle == nil {
		return errors.New("actors: query needs a Name and a Handle")
	}
	if _, ok := rt.projections[q.Projection]; !ok {
		return fmt.Errorf("actors: query %q reads unknown projection %q", q.Name, q.Projection)
	}
	if _, dup := rt.queries[q.Name]; dup {
		return fmt.Errorf("actors: query %q registered twice", q.Name)
	}
	rt.queries[q.Name] = q
	return nil
}

// Query answers a named query. With minPosition > 0 it first waits until
// the query's projection has applied that global position (read-your-
// writes), at most the runtime's QueryTimeout or ctx's deadline.
func (rt *Runtime) Query(ctx context.Context, name string, params json.RawMessage, minPosition uint64) (Answer, error) {
	rt.mu.Lock()
	q, ok := rt.queries[name]
	var p *projection
	if ok {
		p = rt.projections[q.Projection]
	}
	closed := rt.closing
	rt.mu.Unlock()
	if closed {
		return Answer{}, ErrClosed
	}
	if !ok {
		return Answer{}, &UnknownQueryError{Name: name}
	}
	if len(params) == 0 {
		params = json.RawMessage("{}")
	}
	if minPosition > 0 {
		if err := p.waitFor(ctx, q.Name, minPosition, rt.cfg.QueryTimeout); err != nil {
			return Answer{}, err
		}
	}
	var ans Answer
	err := rt.cfg.ReadStore.db.View(func(txn *badger.Txn) error {
		// The checkpoint read in the same transaction is the position this
		// answer reflects.
		it, err := txn.Get(checkpointKey(p.def.Name))
		if err == nil {
			_ = it.Value(func(v []byte) error {
				if len(v) == 8 {
					ans.Position = binary.BigEndian.Uint64(v)
				}
				return nil
			})
		}
		res, err := q.Handle(ctx, &View{txn: txn, projection: p.def.Name}, params)
		ans.Result = res
		return err
	})
	return ans, err
}

// QueryNames lists the registered queries.
func (rt *Runtime) QueryNames() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make([]string, 0, len(rt.queries))
	for n := range rt.queries {
		out = append(out, n)
	}
	return out
}

// ProjectionStatus describes a projection's progress.
type ProjectionStatus struct {
	Name      string
	Position  uint64 // last global position applied
	Head      uint64 // last global position in the journal
	LastError string
	// Reactor marks reactors (their side effects make them unsafe to
	// rebuild); Internal marks the runtime's and the node's own
	// projections, whose names start with "$" (the timer index, the events
	// publisher).
	Reactor, Internal bool
}

// Projections reports the status of every projection.
func (rt *Runtime) Projections() []ProjectionStatus {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	head := rt.journal.LastPosition()
	out := make([]ProjectionStatus, 0, len(rt.projections))
	for _, p := range rt.projections {
		pos, lastErr := p.status()
		out = append(out, ProjectionStatus{Name: p.def.Name, Position: pos, Head: head, LastError: lastErr,
			Reactor: p.def.perEvent, Internal: strings.HasPrefix(p.def.Name, "$")})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// UnknownProjectionError names a projection nobody registered.
type UnknownProjectionError struct{ Name string }

func (e *UnknownProjectionError) Error() string {
	return fmt.Sprintf("actors: unknown projection %q", e.Name)
}

// RebuildProjection throws a projection's read model away and rebuilds it
// from the start of the global log. It returns once the rebuild has begun;
// progress shows in Projections (and queries waiting for a position wait for
// the rebuild to reach it). Reactors cannot be rebuilt: replaying them would
// repeat their side effects.
func (rt *Runtime) RebuildProjection(ctx context.Context, name string) error {
	rt.mu.Lock()
	p, ok := rt.projections[name]
	closing := rt.closing || !rt.started
	rt.mu.Unlock()
	switch {
	case closing:
		return ErrClosed
	case !ok:
		return &UnknownProjectionError{Name: name}
	case p.def.perEvent:
		return &RejectedError{Reason: fmt.Sprintf("%s is a reactor: rebuilding it would repeat its side effects", name)}
	case p.def.Flush != nil:
		return &RejectedError{Reason: fmt.Sprintf("%s writes outside the read store: rebuilding it would repeat those writes", name)}
	}
	p.stop()
	if err := rt.cfg.ReadStore.reset(name); err != nil {
		p.start()
		return fmt.Errorf("actors: rebuild %s: %w", name, err)
	}
	p.mu.Lock()
	p.pos, p.lastErr = 0, ""
	p.mu.Unlock()
	rt.log.Info("projection rebuild started", "projection", name, "head", rt.journal.LastPosition())
	p.start()
	return nil
}

// WaitProjection blocks until the projection has applied position pos, or
// ctx ends; it reports progress to the callback on each advance.
func (rt *Runtime) WaitProjection(ctx context.Context, name string, pos uint64, progress func(applied uint64)) error {
	rt.mu.Lock()
	p, ok := rt.projections[name]
	rt.mu.Unlock()
	if !ok {
		return &UnknownProjectionError{Name: name}
	}
	for {
		p.mu.Lock()
		cur, ch := p.pos, p.changed
		p.mu.Unlock()
		if progress != nil {
			progress(cur)
		}
		if cur >= pos {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type projection struct {
	def Projection
	rt  *Runtime

	mu      sync.Mutex
	pos     uint64        // checkpoint: last global position applied
	changed chan struct{} // closed and replaced whenever pos advances
	lastErr string
	cancel  context.CancelFunc // stops the running goroutine
	done    chan struct{}      // closed when it has stopped
}

// start runs the projection's goroutine; stop cancels it and waits.
func (p *projection) start() {
	ctx, cancel := context.WithCancel(p.rt.ctx)
	done := make(chan struct{})
	p.mu.Lock()
	p.cancel, p.done = cancel, done
	p.mu.Unlock()
	go func() {
		defer close(done)
		p.run(ctx)
	}()
}

func (p *projection) stop() {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.cancel, p.done = nil, nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (p *projection) load() error {
	pos, err := p.rt.cfg.ReadStore.checkpoint(p.def.Name)
	if err != nil {
		return fmt.Errorf("actors: projection %q: %w", p.def.Name, err)
	}
	p.mu.Lock()
	p.pos = pos
	p.mu.Unlock()
	return nil
}

func (p *projection) status() (uint64, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos, p.lastErr
}

func (p *projection) advance(pos uint64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastErr = err.Error()
	} else {
		p.lastErr = ""
	}
	if pos > p.pos {
		p.pos = pos
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

func (p *projection) waitFor(ctx context.Context, query string, want uint64, bound time.Duration) error {
	start := time.Now()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		p.mu.Lock()
		pos, ch := p.pos, p.changed
		p.mu.Unlock()
		if pos >= want {
			return nil
		}
		select {
		case <-ch:
			continue
		case <-timer.C:
		case <-ctx.Done():
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return ctx.Err()
			}
		}
		return &PositionTimeoutError{Query: query, Projection: p.def.Name, Want: want, Reached: pos, Head: p.rt.journal.LastPosition(), Waited: time.Since(start)}
	}
}

// intercept runs the event sidecar chain for user projections; skip
// reports a rejection.
func (p *projection) intercept(ctx context.Context, ev *journal.Event) (skip bool, err error) {
	f := p.rt.cfg.InterceptEvent
	if f == nil || p.def.perEvent || strings.HasPrefix(p.def.Name, "$") {
		return false, nil
	}
	err = f(ctx, p.def.Name, ev)
	var rej *RejectedError
	if errors.As(err, &rej) {
		p.rt.log.Info("event rejected for projection", "projection", p.def.Name, "stream", ev.Stream, "sequence", ev.Sequence, "err", rej.Reason)
		return true, nil
	}
	return false, err
}

// batchSize bounds the events applied in one read-store transaction.
const batchSize = 256

// run consumes the global log until ctx ends.
func (p *projection) run(ctx context.Context) {
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		pos, _ := p.status()
		caughtUp, err := p.step(ctx, pos)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.rt.log.Error("projection failed; retrying", "projection", p.def.Name, "position", pos, "err", err)
			p.advance(0, err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		if caughtUp {
			cur, _ := p.status()
			if _, err := p.rt.journal.WaitPosition(ctx, cur); err != nil {
				return
			}
		}
	}
}

// step applies up to batchSize events after pos in one transaction together
// with the new checkpoint, and reports whether it reached the log's head.
func (p *projection) step(ctx context.Context, pos uint64) (caughtUp bool, err error) {
	// Read the head first: every position up to it is committed, so when
	// the filtered read comes back short the projection has seen all of
	// them and may advance its checkpoint to the head.
	head := p.rt.journal.LastPosition()
	if head <= pos {
		return true, nil
	}
	db := p.rt.cfg.ReadStore.db
	txn := db.NewTransaction(true)
	defer txn.Discard()
	tx := &Tx{View{txn: txn, projection: p.def.Name}}
	limit := batchSize
	if p.def.perEvent {
		limit = 1
	}
	n, last := 0, pos
	for ev, err := range p.rt.journal.ReadAll(ctx, pos+1, p.def.Filter, limit) {
		if err != nil {
			return false, err
		}
		if ev.Position > head {
			break
		}
		skip, err := p.intercept(ctx, &ev)
		if err != nil {
			return false, fmt.Errorf("sidecar on %s event %d (%s): %w", ev.Stream, ev.Sequence, ev.Type, err)
		}
		if skip {
			n, last = n+1, ev.Position
			if n == limit {
				break
			}
			continue
		}
		if err := p.def.Apply(tx, ev); err != nil {
			return false, fmt.Errorf("apply %s event %d (%s): %w", ev.Stream, ev.Sequence, ev.Type, err)
		}
		n, last = n+1, ev.Position
		if n == limit {
			break
		}
	}
	if n < limit {
		last, caughtUp = head, true
	}
	if n > 0 && p.def.Flush != nil {
		if err := p.def.Flush(ctx); err != nil {
			return false, fmt.Errorf("flush: %w", err)
		}
	}
	var cp [8]byte
	binary.BigEndian.PutUint64(cp[:], last)
	if err := txn.Set(checkpointKey(p.def.Name), cp[:]); err != nil {
		return false, err
	}
	if err := txn.Commit(); err != nil {
		return false, err
	}
	p.advance(last, nil)
	if n > 0 && p.def.committed != nil {
		p.def.committed()
	}
	return caughtUp, nil
}
