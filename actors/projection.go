package actors

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/troupe-dev/troupe/journal"
	"go.opentelemetry.io/otel/trace"
)

// Projection builds a read model from the journal's log. The log has one
// partition on a single node and several in a cluster: a projection
// consumes each partition in order, the partitions concurrently, each
// batch in its own read-store transaction with that partition's
// checkpoint (transactions that collide are retried).
type Projection struct {
	// Name identifies the projection and namespaces its read model.
	Name string
	// Filter selects the events it consumes (all, one kind, or one tag).
	Filter journal.Filter
	// Apply folds one event into the read model within tx. It runs one
	// event at a time, in the partition's order: the events of one entity
	// come in order, those of entities in different partitions may
	// interleave. An error stops the partition (it is retried after a
	// back-off) without advancing its checkpoint past the failed event.
	// A read model's Apply (no Flush, not a reactor) runs for one
	// partition at a time, and its reads of rows it wrote or read before
	// are answered from memory (ADR 0019).
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
	// Position is the position the read model had applied in partition 0
	// (on a single node, the whole log).
	Position uint64
	// Token is what the read model had applied in every partition.
	Token journal.Token
}

// UnknownQueryError is a query nobody registered.
type UnknownQueryError struct{ Name string }

func (e *UnknownQueryError) Error() string { return fmt.Sprintf("actors: unknown query %q", e.Name) }

// PositionTimeoutError is a query whose projection did not reach the
// requested position (of a consistency token) in time.
type PositionTimeoutError struct {
	Query, Projection string
	// Partition is the partition of the log the position is in.
	Partition     int
	Want, Reached uint64
	// Head is the partition's last position (0 for a partition the log
	// does not have).
	Head   uint64
	Waited time.Duration
}

func (e *PositionTimeoutError) Error() string {
	where := ""
	if e.Partition != 0 {
		where = fmt.Sprintf(" of partition %d", e.Partition)
	}
	if e.Want > e.Head {
		return fmt.Sprintf("actors: query %q: position %d%s does not exist yet (the log ends at %d); waited %s", e.Query, e.Want, where, e.Head, e.Waited)
	}
	return fmt.Sprintf("actors: query %q: projection %q reached position %d%s, not %d, within %s", e.Query, e.Projection, e.Reached, where, e.Want, e.Waited)
}

// RegisterProjection adds a projection; call before Start.
func (rt *Runtime) RegisterProjection(p Projection) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if p.Name == "" || p.Apply == nil {
		return errors.New("actors: projection needs a Name and an Apply")
	}
	if strings.IndexByte(p.Name, 0) >= 0 {
		return fmt.Errorf("actors: projection name %q holds a NUL byte", p.Name)
	}
	if _, dup := rt.projections[p.Name]; dup {
		return fmt.Errorf("actors: projection %q registered twice", p.Name)
	}
	pr := &projection{def: p, rt: rt, changed: make(chan struct{}), pos: make([]uint64, rt.journal.Partitions()), saved: make([]time.Time, rt.journal.Partitions())}
	if !p.perEvent && p.Flush == nil {
		// A read model (not a reactor, nor a projection that writes
		// elsewhere, whose partitions' side effects run side by side).
		pr.rows = newRowCache(defaultRowCacheBytes)
	}
	rt.projections[p.Name] = pr
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

// Query answers a named query. Given a consistency token (a command's
// Outcome.Token, or several merged), it first waits until the query's
// projection has applied every position the token names (read-your-
// writes), at most the runtime's QueryTimeout or ctx's deadline.
func (rt *Runtime) Query(ctx context.Context, name string, params json.RawMessage, min journal.Token) (Answer, error) {
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
	if !min.IsZero() {
		if err := p.waitFor(ctx, q.Name, min, rt.cfg.QueryTimeout); err != nil {
			return Answer{}, err
		}
	}
	var ans Answer
	err := rt.cfg.ReadStore.db.View(func(txn *badger.Txn) error {
		// The checkpoints read in the same transaction are what this
		// answer reflects.
		for part := range len(p.pos) {
			pos, err := readCheckpoint(txn, p.def.Name, part)
			if err != nil {
				return err
			}
			if part == 0 {
				ans.Position = pos
			}
			ans.Token = ans.Token.Merge(journal.TokenAt(part, pos))
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
	Name string
	// Position is the sum over the log's partitions of the last position
	// applied; Head the sum of the partitions' last positions. Head -
	// Position is the lag in events. On a single node (one partition) they
	// are the global positions.
	Position, Head uint64
	// Positions and Heads are the same, partition by partition.
	Positions, Heads []uint64
	LastError        string
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
	heads := make([]uint64, rt.journal.Partitions())
	var head uint64
	for part := range heads {
		heads[part] = rt.journal.LastPosition(part)
		head += heads[part]
	}
	out := make([]ProjectionStatus, 0, len(rt.projections))
	for _, p := range rt.projections {
		pos, lastErr := p.status()
		out = append(out, ProjectionStatus{Name: p.def.Name, Position: sum(pos), Head: head, Positions: pos, Heads: heads,
			LastError: lastErr, Reactor: p.def.perEvent, Internal: strings.HasPrefix(p.def.Name, "$")})
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
	p.forgetRows()
	if err := rt.cfg.ReadStore.reset(name); err != nil {
		p.start()
		return fmt.Errorf("actors: rebuild %s: %w", name, err)
	}
	p.mu.Lock()
	p.pos, p.lastErr = make([]uint64, len(p.pos)), ""
	p.mu.Unlock()
	rt.log.Info("projection rebuild started", "projection", name, "head", journal.Heads(rt.journal).String())
	p.start()
	return nil
}

// WaitProjection blocks until the projection has applied pos events (the
// sum over the partitions of the positions applied, as
// ProjectionStatus.Position counts them), or ctx ends; it reports progress
// to the callback on each advance.
func (rt *Runtime) WaitProjection(ctx context.Context, name string, pos uint64, progress func(applied uint64)) error {
	rt.mu.Lock()
	p, ok := rt.projections[name]
	rt.mu.Unlock()
	if !ok {
		return &UnknownProjectionError{Name: name}
	}
	for {
		p.mu.Lock()
		cur, ch := sum(p.pos), p.changed
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

	mu  sync.Mutex
	pos []uint64 // checkpoints: last position applied, by partition
	// saved is when a partition's checkpoint was last saved (to the read
	// store, or for an owned partition to Config.Checkpoints); only that
	// partition's goroutine touches it, or, for a read model (rows set),
	// whoever holds applyMu.
	saved   []time.Time
	changed chan struct{} // closed and replaced whenever pos advances
	lastErr string
	cancel  context.CancelFunc // stops the running goroutines
	done    chan struct{}      // closed when they have stopped

	// applyMu lets one partition's goroutine at a time apply and commit
	// the waiting batches of a read model (rows set; applyCombined), so
	// that rows, the read model's recently read rows, stays what Badger
	// last committed (rowcache.go). Reactors and projections with a Flush
	// have no rows, and their partitions run side by side.
	applyMu sync.Mutex
	rows    *rowCache
	qmu     sync.Mutex // guards queue
	queue   []*batch   // read model batches waiting for applyMu
	// Transactions committed, the batches in them, and batches that
	// failed (tests).
	txns, batches, failed atomic.Uint64
}

func sum(xs []uint64) uint64 {
	var n uint64
	for _, x := range xs {
		n += x
	}
	return n
}

// start runs the projection's goroutines, one per partition; stop cancels
// them and waits.
func (p *projection) start() {
	ctx, cancel := context.WithCancel(p.rt.ctx)
	done := make(chan struct{})
	p.mu.Lock()
	p.cancel, p.done = cancel, done
	parts := len(p.pos)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx, part)
		}()
	}
	go func() {
		wg.Wait()
		close(done)
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
	pos, err := p.rt.cfg.ReadStore.checkpoints(p.def.Name, len(p.pos))
	if err != nil {
		return fmt.Errorf("actors: projection %q: %w", p.def.Name, err)
	}
	p.mu.Lock()
	p.pos = pos
	p.mu.Unlock()
	return nil
}

// forgetRows empties the row cache (the read model is being reset).
func (p *projection) forgetRows() {
	if p.rows == nil {
		return
	}
	p.applyMu.Lock()
	p.rows.clear()
	p.applyMu.Unlock()
}

// status returns a copy of the checkpoints and the last error.
func (p *projection) status() ([]uint64, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.pos), p.lastErr
}

func (p *projection) position(part int) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos[part]
}

func (p *projection) advance(part int, pos uint64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastErr = err.Error()
	} else {
		p.lastErr = ""
	}
	if pos > p.pos[part] {
		p.pos[part] = pos
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// waitFor waits until the projection has applied every position of want.
func (p *projection) waitFor(ctx context.Context, query string, want journal.Token, bound time.Duration) error {
	start := time.Now()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		p.mu.Lock()
		ch := p.changed
		part, reached, ok := -1, uint64(0), true
		for _, tp := range want.Partitions() {
			if tp >= len(p.pos) || p.pos[tp] < want.Position(tp) {
				part, ok = tp, false
				if tp < len(p.pos) {
					reached = p.pos[tp]
				}
				break
			}
		}
		p.mu.Unlock()
		if ok {
			return nil
		}
		timeout := func() error {
			return &PositionTimeoutError{Query: query, Projection: p.def.Name, Partition: part, Want: want.Position(part),
				Reached: reached, Head: p.rt.journal.LastPosition(part), Waited: time.Since(start)}
		}
		if part >= len(p.pos) {
			return timeout() // a partition the log does not have: never
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
		return timeout()
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

// run consumes one partition of the log until ctx ends.
func (p *projection) run(ctx context.Context, part int) {
	if po, ok := p.owned(); ok {
		p.runOwned(ctx, part, po)
		return
	}
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		pos := p.position(part)
		caughtUp, err := p.step(ctx, part, pos, 0)
		if errors.Is(err, badger.ErrConflict) {
			continue // another partition's batch wrote the same keys first
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.rt.log.Error("projection failed; retrying", "projection", p.def.Name, "partition", part, "position", pos, "err", err)
			p.advance(part, 0, err)
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
			if _, err := p.rt.journal.WaitPosition(ctx, part, p.position(part)); err != nil {
				return
			}
		}
	}
}

// owned reports whether the projection's partitions run only where they
// are owned: a projection with side effects (a reactor, or one with a
// Flush such as the events publisher) in a cluster, whose placement owns
// the journal's partitions and whose checkpoints are kept in
// Config.Checkpoints.
func (p *projection) owned() (PartitionOwner, bool) {
	if !p.def.perEvent && p.def.Flush == nil {
		return nil, false
	}
	po, ok := p.rt.placement.(PartitionOwner)
	if !ok || p.rt.cfg.Checkpoints == nil {
		return nil, false
	}
	return po, true
}

// runOwned consumes one partition while this node owns it, from the
// checkpoint in Config.Checkpoints, saved under the owner's epoch: a
// failover repeats at most what the previous owner did after its last
// checkpoint (one event for a reactor).
func (p *projection) runOwned(ctx context.Context, part int, po PartitionOwner) {
	var epoch, fenced uint64
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		e, ok := po.PartitionEpoch(part)
		if !ok || e == fenced {
			// Not ours; or ours under an epoch a newer owner's
			// checkpoint has fenced: wait for the placement to learn.
			epoch = 0
			if !pause(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		if e != epoch {
			pos, err := p.rt.cfg.Checkpoints.Load(ctx, p.def.Name, part)
			if err != nil {
				p.rt.log.Warn("projection checkpoint not loaded; retrying", "projection", p.def.Name, "partition", part, "err", err)
				if !pause(ctx, backoff) {
					return
				}
				backoff = min(backoff*2, 2*time.Second)
				continue
			}
			p.reset(part, pos)
			epoch = e
		}
		pos := p.position(part)
		caughtUp, err := p.step(ctx, part, pos, epoch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrFencedCheckpoint) {
				p.rt.log.Warn("projection checkpoint fenced by a newer owner; pausing the partition", "projection", p.def.Name, "partition", part, "epoch", epoch)
				epoch, fenced = 0, epoch
				continue
			}
			p.rt.log.Error("projection failed; retrying", "projection", p.def.Name, "partition", part, "position", pos, "err", err)
			p.advance(part, 0, err)
			if !pause(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		if caughtUp {
			// Wake on new events, and look at ownership again now and
			// then.
			wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			_, _ = p.rt.journal.WaitPosition(wctx, part, p.position(part))
			cancel()
		}
	}
}

// reset sets a partition's checkpoint, forwards or backwards (an owner
// taking a partition over starts from the replicated checkpoint).
func (p *projection) reset(part int, pos uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pos[part] != pos {
		p.pos[part] = pos
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// skipSaveEvery bounds how often a partition's checkpoint is saved when
// the steps apply nothing (see step). A variable for tests.
var skipSaveEvery = time.Second

// step applies up to batchSize events of a partition after pos in one
// transaction together with the partition's new checkpoint (a read
// model's may share it with other partitions' batches), and reports
// whether it reached the partition's head. With an epoch (an owned
// partition) the checkpoint goes to Config.Checkpoints under it instead.
func (p *projection) step(ctx context.Context, part int, pos, epoch uint64) (caughtUp bool, err error) {
	b, err := p.read(ctx, part, pos)
	if err != nil || b == nil {
		return b == nil && err == nil, err
	}
	if p.rows == nil {
		err = p.applyAlone(ctx, b, epoch)
	} else {
		err = p.applyCombined(b)
	}
	return b.caughtUp && err == nil, err
}

// batch is what one step of a partition read, to apply in one transaction
// (alone, or combined with other partitions' batches).
type batch struct {
	part      int
	pos, last uint64 // the checkpoint before and after the batch
	n         int    // events read (applied, or rejected by a sidecar)
	evs       []journal.Event
	caughtUp  bool // the batch reaches the partition's head

	// Set by whoever applied it, under applyMu.
	done bool
	err  error
}

// read reads a partition's next batch after pos, running the event
// sidecars (nil: nothing new). It runs outside the apply lock: the reads
// may cross the network.
func (p *projection) read(ctx context.Context, part int, pos uint64) (*batch, error) {
	// Read the head first: every position up to it is committed, so when
	// the filtered read comes back short the projection has seen all of
	// them and may advance its checkpoint to the head.
	head := p.rt.journal.LastPosition(part)
	if head <= pos {
		return nil, nil
	}
	limit := batchSize
	if p.def.perEvent {
		limit = 1
	}
	b := &batch{part: part, pos: pos, last: pos}
	for ev, err := range p.rt.journal.ReadAll(ctx, part, pos+1, p.def.Filter, limit) {
		if err != nil {
			return nil, err
		}
		if ev.Position > head {
			break
		}
		skip, err := p.intercept(ctx, &ev)
		if err != nil {
			return nil, fmt.Errorf("sidecar on %s event %d (%s): %w", ev.Stream, ev.Sequence, ev.Type, err)
		}
		if !skip {
			b.evs = append(b.evs, ev)
		}
		b.n, b.last = b.n+1, ev.Position
		if b.n == limit {
			break
		}
	}
	if b.n < limit {
		b.last, b.caughtUp = head, true
	}
	return b, nil
}

// apply folds a batch's events into the read model within tx.
func (p *projection) apply(tx *Tx, b *batch) error {
	for i := range b.evs {
		ev := &b.evs[i]
		span := p.applySpan(ev)
		if span != nil {
			tx.span = span.SpanContext()
		}
		err := p.def.Apply(tx, *ev)
		if span != nil {
			EndSpan(span, err)
			tx.span = trace.SpanContext{}
		}
		if err != nil {
			return fmt.Errorf("apply %s event %d (%s): %w", ev.Stream, ev.Sequence, ev.Type, err)
		}
	}
	return nil
}

// saveCheckpoint puts a batch's checkpoint into txn, or, for a batch that
// applied nothing (most projections see most events pass them by), at
// most every skipSaveEvery: a restart re-reads those events and applies
// none of them. A batch that applied something commits its checkpoint
// with it, exactly once. The caller may touch p.saved[b.part].
func (p *projection) saveCheckpoint(txn *badger.Txn, b *batch) error {
	if b.n == 0 && time.Since(p.saved[b.part]) < skipSaveEvery {
		return nil
	}
	cp := binary.BigEndian.AppendUint64(make([]byte, 0, 8), b.last)
	if err := txn.Set(checkpointKey(p.def.Name, b.part), cp); err != nil {
		return err
	}
	p.saved[b.part] = time.Now()
	return nil
}

// applyAlone applies one batch of a projection without a row cache (a
// reactor, or a projection with a Flush) in its own transaction, on the
// partition's goroutine; partitions run side by side.
func (p *projection) applyAlone(ctx context.Context, b *batch, epoch uint64) error {
	txn := p.rt.cfg.ReadStore.db.NewTransaction(true)
	defer txn.Discard()
	if err := p.apply(&Tx{View: View{txn: txn, projection: p.def.Name}}, b); err != nil {
		return err
	}
	if b.n > 0 && p.def.Flush != nil {
		if err := p.def.Flush(ctx); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
	}
	if epoch != 0 {
		// A step that applied nothing (a reactor's filter matched none
		// of the new events) moves the checkpoint over events without
		// side effects: saving it is a replicated write per append, so
		// it is saved at most every skipSaveEvery. A failover then
		// re-reads those events, and again applies none of them.
		if b.last > b.pos && (b.n > 0 || time.Since(p.saved[b.part]) >= skipSaveEvery) {
			if err := p.rt.cfg.Checkpoints.Save(ctx, p.def.Name, b.part, b.last, epoch); err != nil {
				return err
			}
			p.saved[b.part] = time.Now()
		}
	} else if err := p.saveCheckpoint(txn, b); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	p.advance(b.part, b.last, nil)
	if b.n > 0 && p.def.committed != nil {
		p.def.committed()
	}
	return nil
}

// maxCombined bounds the events of the batches combined into one
// transaction.
const maxCombined = 4 * batchSize

// applyCombined applies a batch of a read model (a projection with a row
// cache). One partition's goroutine at a time holds applyMu; it applies
// every batch waiting then, its own and other partitions', in one
// transaction with each partition's checkpoint, so that a busy node
// commits once per round rather than once per partition, and the row
// cache stays what Badger last committed. A batch whose Apply fails is
// left out (its partition retries it) and the others are applied again
// without it.
func (p *projection) applyCombined(b *batch) error {
	p.qmu.Lock()
	p.queue = append(p.queue, b)
	p.qmu.Unlock()
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	for !b.done {
		p.qmu.Lock()
		k, evs := 0, 0
		for k < len(p.queue) && (k == 0 || evs+len(p.queue[k].evs) <= maxCombined) {
			evs += len(p.queue[k].evs)
			k++
		}
		group := slices.Clone(p.queue[:k])
		p.queue = slices.Delete(p.queue, 0, k)
		p.qmu.Unlock()
		p.commitGroup(group)
	}
	return b.err
}

// commitGroup applies batches in one transaction and answers each. The
// caller holds applyMu.
func (p *projection) commitGroup(group []*batch) {
	for len(group) > 0 {
		txn := p.rt.cfg.ReadStore.db.NewTransaction(true)
		tx := &Tx{View: View{txn: txn, projection: p.def.Name, rows: &txRows{cache: p.rows}}}
		failed := -1
		var err error
		for i, b := range group {
			if err = p.apply(tx, b); err != nil {
				failed = i
				break
			}
		}
		applied := false
		for _, b := range group {
			if err == nil {
				err = p.saveCheckpoint(txn, b)
			}
			applied = applied || b.n > 0
		}
		if err == nil {
			err = txn.Commit()
		}
		txn.Discard()
		if err != nil {
			tx.rows.keepReads()
		}
		switch {
		case errors.Is(err, badger.ErrTxnTooBig) && len(group) > 1:
			// Too much for one transaction: commit the batches in two
			// halves (before the one that did not fit, and the rest).
			half := len(group) / 2
			if failed > 0 {
				half = failed
			}
			p.commitGroup(group[:half])
			group = group[half:]
			continue
		case failed >= 0:
			// Its partition retries the batch; the others go again.
			group[failed].done, group[failed].err = true, err
			p.failed.Add(1)
			group = slices.Delete(group, failed, failed+1)
			continue
		case err == nil:
			tx.rows.settle()
			p.txns.Add(1)
			p.batches.Add(uint64(len(group)))
		default:
			p.failed.Add(uint64(len(group)))
		}
		for _, b := range group {
			b.done, b.err = true, err
			if err == nil {
				p.advance(b.part, b.last, nil)
			}
		}
		if err == nil && applied && p.def.committed != nil {
			p.def.committed()
		}
		return
	}
}
