package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

var (
	// ErrClosed is returned by a runtime that is shutting down or closed.
	ErrClosed = errors.New("actors: runtime closed")
)

// UnknownKindError is a command for a kind nobody registered.
type UnknownKindError struct{ Kind string }

func (e *UnknownKindError) Error() string {
	return fmt.Sprintf("actors: unknown entity kind %q", e.Kind)
}

// MailboxFullError is a command refused because the entity already has
// MailboxSize commands waiting. It is safe to retry later.
type MailboxFullError struct {
	Stream string
	Size   int
}

func (e *MailboxFullError) Error() string {
	return fmt.Sprintf("actors: mailbox of %s is full (%d commands waiting)", e.Stream, e.Size)
}

// Interceptor inspects a command before its entity sees it: sidecar plugins
// plug in here. It may modify cmd; a returned error fails the command (use
// *RejectedError for a verdict). It is called on the sender's goroutine,
// concurrently for different commands, and must be safe for that.
type Interceptor func(ctx context.Context, cmd *troupev1.Command) error

// Config configures a Runtime. Journal and ReadStore are required; every
// other field has a default.
type Config struct {
	// Journal is the write store the entities append to.
	Journal journal.Store
	// ReadStore holds the read models, projection checkpoints and the
	// index of pending timers; it is kept apart from the journal (CQRS).
	ReadStore *ReadStore
	// System is the actor system entities run in. Default: a new one.
	System *actor.ActorSystem
	// Intercept, when set, runs before every command delivery.
	Intercept Interceptor
	// Ambassador, when set, calls an ambassador plugin by name: how actors
	// reach the outside world (the node wires the plugin host here).
	Ambassador func(ctx context.Context, name string, call *troupev1.AmbassadorCall) (*troupev1.AmbassadorReply, error)
	// InterceptEvent, when set, runs before each event reaches a user
	// projection (not reactors, not the runtime's own "$" projections). It
	// may change ev's payload and metadata; a *RejectedError skips the
	// event for that projection; another error retries the batch. Called on
	// the projection's goroutine.
	InterceptEvent func(ctx context.Context, projection string, ev *journal.Event) error
	// MailboxSize bounds the commands waiting for one entity. Default 1024.
	MailboxSize int
	// QueryTimeout bounds a query's wait for a minimum position. Default 5s.
	QueryTimeout time.Duration
	// SnapshotEvery snapshots an entity every N events. Default 1000;
	// negative: never. Kinds may override it (Kind.SnapshotEvery).
	SnapshotEvery int
	// PassivateAfter stops an entity that received nothing for this long;
	// its next command recovers it. Default 2 minutes; negative: never.
	PassivateAfter time.Duration
	// Placement maps entities to shards and shards to nodes. Default:
	// LocalPlacement, which owns every shard.
	Placement Placement
	// Forwarder sends a command whose shard another node owns to that
	// node. Nil: such a command fails with *NotOwnerError.
	Forwarder Forwarder
	// Checkpoints keeps the checkpoints of projections with side effects
	// in a cluster (see PartitionOwner). Nil: the read store.
	Checkpoints CheckpointStore
	// Node names this node (its id in a cluster). Default "local".
	Node string
	// Leader runs the singletons where the cluster decides. Nil: the
	// runtime runs each singleton itself from Start to Close.
	Leader Leader
	// Clock returns the time used for timers. Default: time.Now.
	Clock func() time.Time
	// Logger receives the runtime's logs. Default: discard.
	Logger *slog.Logger
	// Tracer, when set, records the spans of entity turns, journal
	// appends and projection applies (actors/trace.go). Nil: no spans;
	// the caller's trace context still travels on commands and events.
	Tracer trace.Tracer
	// OnAppend, when set, is told the duration and outcome of each
	// journal append of an entity of kind (the node's latency
	// histogram). Called on the entity's goroutine; must not block.
	OnAppend func(kind string, d time.Duration, err error)
}

// Runtime hosts entity kinds, projections and queries on one node.
//
// Goroutines: one actor per live entity (owned by the actor system, stopped
// by passivation or by Shutdown/Close), one goroutine per projection and
// reactor, and the timer scheduler (started by Start, stopped and waited for
// by Shutdown/Close). Lock order: mu, then an entity shard's lock, then a
// projection's lock.
type Runtime struct {
	cfg     Config
	journal journal.Store
	system  *actor.ActorSystem
	ownSys  bool
	log     *slog.Logger

	// ctx lives as long as the runtime; entity appends and projections use
	// it so that they finish even when a caller gives up.
	ctx    context.Context
	cancel context.CancelFunc

	placement Placement
	entities  []entityShard // one per shard
	timers    *timerService

	mu          sync.Mutex
	kinds       map[string]Behavior
	projections map[string]*projection
	queries     map[string]Query
	singletons  []Singleton
	started     bool
	closing     bool

	closed atomic.Bool // set by Close; checked under an entity shard's lock
	// dispatcher runs the entities' mailbox turns on reused goroutines.
	dispatcher *reusingDispatcher

	// open is set by Start; from then on kinds does not change, so sends
	// read it without mu. sends counts the commands in flight.
	open      atomic.Bool
	sends     sendGate
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// sendGate counts the sends in flight, without a lock, and refuses new
// ones once closed.
type sendGate struct {
	state atomic.Int64  // sends in flight << 1 | closed bit
	idle  chan struct{} // closed once the gate is closed and no send is in flight
	once  sync.Once
}

// enter admits a send, unless the gate is closed.
func (g *sendGate) enter() bool {
	for {
		s := g.state.Load()
		if s&1 != 0 {
			return false
		}
		if g.state.CompareAndSwap(s, s+2) {
			return true
		}
	}
}

// leave ends an admitted send.
func (g *sendGate) leave() {
	if g.state.Add(-2) == 1 {
		g.once.Do(func() { close(g.idle) })
	}
}

// close refuses further sends and returns a channel that is closed once the
// sends in flight have left. It may be called more than once.
func (g *sendGate) close() <-chan struct{} {
	if g.state.Or(1) == 0 {
		g.once.Do(func() { close(g.idle) })
	}
	return g.idle
}

// entityShard holds the live entities of one shard.
type entityShard struct {
	mu sync.Mutex
	m  map[string]*entityRef
}

// entityRef is a live entity. inflight counts the messages sent to it and
// not yet handled; it is incremented under the shard's lock, so that
// passivation (which also holds it) never stops an entity with messages on
// the way.
type entityRef struct {
	stream   string
	shard    *entityShard
	index    int // the shard's number
	pid      *actor.PID
	inflight atomic.Int32
}

// NewRuntime validates cfg and returns a runtime ready for registrations.
func NewRuntime(cfg Config) (*Runtime, error) {
	if cfg.Journal == nil {
		return nil, errors.New("actors: Config.Journal is required")
	}
	if cfg.MailboxSize == 0 {
		cfg.MailboxSize = 1024
	}
	if cfg.MailboxSize < 0 {
		return nil, fmt.Errorf("actors: negative MailboxSize %d", cfg.MailboxSize)
	}
	if cfg.ReadStore == nil {
		return nil, errors.New("actors: Config.ReadStore is required")
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = 5 * time.Second
	}
	if cfg.SnapshotEvery == 0 {
		cfg.SnapshotEvery = 1000
	}
	if cfg.PassivateAfter == 0 {
		cfg.PassivateAfter = 2 * time.Minute
	}
	if cfg.Placement == nil {
		cfg.Placement = LocalPlacement{}
	}
	if n := cfg.Placement.NumShards(); n <= 0 {
		return nil, fmt.Errorf("actors: placement with %d shards", n)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Node == "" {
		cfg.Node = "local"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rt := &Runtime{
		cfg:         cfg,
		journal:     cfg.Journal,
		system:      cfg.System,
		log:         cfg.Logger,
		placement:   cfg.Placement,
		entities:    make([]entityShard, cfg.Placement.NumShards()),
		kinds:       map[string]Behavior{},
		projections: map[string]*projection{},
		queries:     map[string]Query{},
		sends:       sendGate{idle: make(chan struct{})},
	}
	if rt.system == nil {
		rt.system = NewSystem(cfg.Logger)
		rt.ownSys = true
	}
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	rt.dispatcher = newReusingDispatcher(300)
	rt.timers = newTimerService(rt)
	if err := rt.RegisterProjection(rt.timers.projection()); err != nil {
		return nil, err
	}
	return rt, nil
}

func (rt *Runtime) now() time.Time { return rt.cfg.Clock() }

// shardEpoch is the epoch under which this node owns shard, when the
// placement tells it (a cluster), else 0.
func (rt *Runtime) shardEpoch(shard int) uint64 {
	if po, ok := rt.placement.(PartitionOwner); ok {
		e, _ := po.PartitionEpoch(shard)
		return e
	}
	return 0
}

// Logger is the runtime's logger (Config.Logger), for the code a domain
// registers (reactors, singletons).
func (rt *Runtime) Logger() *slog.Logger { return rt.log }

// Node names this node (Config.Node).
func (rt *Runtime) Node() string { return rt.cfg.Node }

// NewSystem returns a protoactor actor system whose logs go to l.
func NewSystem(l *slog.Logger) *actor.ActorSystem {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	l = l.With("component", "protoactor")
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return l }))
}

// Register adds an entity kind. Kinds are registered before Start.
func (rt *Runtime) Register(k Behavior) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.started || rt.closing {
		return fmt.Errorf("actors: kind %q registered after Start or Close", k.Name())
	}
	if k.Name() == "" {
		return errors.New("actors: kind with an empty name")
	}
	if _, _, err := journal.ParseStream(k.Name() + "/x"); err != nil {
		return fmt.Errorf("actors: kind name %q: %w", k.Name(), err)
	}
	if _, dup := rt.kinds[k.Name()]; dup {
		return fmt.Errorf("actors: kind %q registered twice", k.Name())
	}
	rt.kinds[k.Name()] = k
	return nil
}

// Kinds lists the registered kinds.
func (rt *Runtime) Kinds() []Behavior {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make([]Behavior, 0, len(rt.kinds))
	for _, k := range rt.kinds {
		out = append(out, k)
	}
	return out
}

// Start starts the projections. Commands may be sent only after Start.
func (rt *Runtime) Start(ctx context.Context) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closing {
		return ErrClosed
	}
	if rt.started {
		return errors.New("actors: runtime already started")
	}
	for _, p := range rt.projections {
		if err := p.load(); err != nil {
			return err
		}
	}
	for _, p := range rt.projections {
		p.start()
	}
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		rt.timers.run(rt.ctx)
	}()
	rt.started = true
	rt.open.Store(true)
	rt.startSingletons()
	return nil
}

// Send delivers one command to its entity and waits for the outcome. The
// outcome is returned only after the events the command decided are durable
// in the journal. When another node owns the entity's shard, the command is
// forwarded there (Config.Forwarder). Send is for trusted, in-process
// callers (reactors, Go code); the API uses SendExternal.
func (rt *Runtime) Send(ctx context.Context, cmd *troupev1.Command) (*Outcome, error) {
	return rt.send(ctx, cmd, false, true)
}

// SendExternal is Send for commands from clients: commands registered with
// HandleInternal are refused.
func (rt *Runtime) SendExternal(ctx context.Context, cmd *troupev1.Command) (*Outcome, error) {
	return rt.send(ctx, cmd, true, true)
}

// SendForwarded serves a command another node forwarded here because this
// node owns its shard. It never forwards again: when this node does not own
// the shard (any more), it fails with *NotOwnerError, which the sending
// node may retry. external is the flag the sender passed to Forward.
func (rt *Runtime) SendForwarded(ctx context.Context, cmd *troupev1.Command, external bool) (*Outcome, error) {
	return rt.send(ctx, cmd, external, false)
}

// send is the one command path: check the command against its kind, find
// the shard's owner, forward or run the sidecar chain and deliver.
func (rt *Runtime) send(ctx context.Context, cmd *troupev1.Command, external, mayForward bool) (*Outcome, error) {
	if !rt.open.Load() || !rt.sends.enter() {
		return nil, ErrClosed
	}
	defer rt.sends.leave()
	k, ok := rt.kinds[cmd.GetKind()]
	if !ok {
		return nil, &UnknownKindError{Kind: cmd.GetKind()}
	}
	stream := journal.StreamID(cmd.GetKind(), cmd.GetEntityId())
	if _, _, err := journal.ParseStream(stream); err != nil {
		return nil, err
	}
	switch ok, internal := k.command(cmd.GetType()); {
	case !ok:
		return nil, &UnknownCommandError{Kind: k.Name(), Type: cmd.GetType()}
	case internal && external:
		return nil, &InternalCommandError{Kind: k.Name(), Type: cmd.GetType()}
	}
	if mayForward && rt.cfg.Intercept != nil {
		// The sidecar chain runs once per command, on the node that
		// received it (a forwarded command has been through it on the
		// sending node), before the command goes to its owner: so that
		// retries across a shard's move never run it twice.
		if err := rt.cfg.Intercept(ctx, cmd); err != nil {
			return nil, err
		}
	}
	shard := rt.placement.ShardOf(cmd.GetKind(), cmd.GetEntityId())
	for {
		owner, local := rt.placement.Owner(shard)
		if !local {
			if !mayForward || rt.cfg.Forwarder == nil {
				return nil, &NotOwnerError{Kind: cmd.GetKind(), ID: cmd.GetEntityId(), Shard: shard, Owner: owner}
			}
			// The forwarder waits (bounded by ctx) for a shard that is
			// moving (owner "") to be served again.
			return rt.cfg.Forwarder.Forward(ctx, owner, cmd, external)
		}
		reply := make(chan result, 1)
		// Only a command forwarded by another node may say that its key
		// was never used (that node generated it); one that entered here
		// is looked up whatever it says.
		d := &delivery{ctx: ctx, cmd: cmd, reply: reply, keyUnused: !mayForward && cmd.GetKeyUnused()}
		if err := rt.deliver(k, shard, stream, cmd.GetEntityId(), d); err != nil {
			return nil, err
		}
		var r result
		select {
		case r = <-reply:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if errors.Is(r.err, journal.ErrNotOwner) {
			// The shard moved away while the command was on its way:
			// the journal refused the append, so nothing happened. Ask
			// the placement again (it has learnt of the move by now, or
			// will: the journal reports it).
			if !mayForward || rt.cfg.Forwarder == nil {
				return nil, &NotOwnerError{Kind: cmd.GetKind(), ID: cmd.GetEntityId(), Shard: shard, Err: r.err}
			}
			if err := rt.waitOwnerChange(ctx, shard); err != nil {
				return nil, err
			}
			continue
		}
		if r.out != nil {
			r.out.Partition = rt.journal.PartitionOf(stream)
		}
		return r.out, r.err
	}
}

// waitOwnerChange waits, bounded by ctx, until the placement no longer says
// that this node owns shard (a write of it was just refused by the journal:
// the placement learns of it shortly).
func (rt *Runtime) waitOwnerChange(ctx context.Context, shard int) error {
	for d := time.Millisecond; ; d = min(2*d, 50*time.Millisecond) {
		if _, local := rt.placement.Owner(shard); !local {
			return nil
		}
		if !pause(ctx, d) {
			return ctx.Err()
		}
	}
}

// pause waits d, or less if ctx ends first; it reports whether ctx is
// still alive.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// deliver sends msg to the entity stream (with id id) of shard, spawning
// it if it is not live. It refuses when the entity already has
// MailboxSize messages waiting. The caller has checked that this node owns
// the shard.
func (rt *Runtime) deliver(k Behavior, shard int, stream, id string, msg any) error {
	es := &rt.entities[shard]
	es.mu.Lock()
	if rt.closed.Load() {
		es.mu.Unlock()
		return ErrClosed
	}
	ref, ok := es.m[stream]
	if !ok {
		if es.m == nil {
			es.m = map[string]*entityRef{}
		}
		ref = &entityRef{stream: stream, shard: es, index: shard}
		a := &entityActor{b: k.newEntity(rt, id), rt: rt, ref: ref}
		ref.pid = rt.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return a }, actor.WithDispatcher(rt.dispatcher)))
		es.m[stream] = ref
	}
	if int(ref.inflight.Load()) >= rt.cfg.MailboxSize {
		es.mu.Unlock()
		return &MailboxFullError{Stream: stream, Size: rt.cfg.MailboxSize}
	}
	ref.inflight.Add(1)
	es.mu.Unlock()
	rt.system.Root.Send(ref.pid, msg)
	return nil
}

// passivate removes an idle entity from its shard, unless a message is on
// its way to it. It reports whether the entity may stop.
func (rt *Runtime) passivate(ref *entityRef) bool {
	ref.shard.mu.Lock()
	defer ref.shard.mu.Unlock()
	if ref.inflight.Load() > 0 || ref.shard.m[ref.stream] != ref {
		return false
	}
	delete(ref.shard.m, ref.stream)
	return true
}

// StopShard stops the live entities of shard, each once the messages on
// their way to it are handled, and returns when none is left or ctx ends.
// The cluster calls it when the shard moves away from this node, after
// the placement stopped naming this node as the shard's owner (so no new
// command is delivered here; a late one is refused by the journal, which
// no longer takes this node's writes for the shard, and goes to the new
// owner). Entities recover from the journal when they start again.
func (rt *Runtime) StopShard(ctx context.Context, shard int) error {
	if shard < 0 || shard >= len(rt.entities) {
		return fmt.Errorf("actors: no shard %d (the placement has %d)", shard, len(rt.entities))
	}
	es := &rt.entities[shard]
	for d := time.Millisecond; ; d = min(2*d, 20*time.Millisecond) {
		var stop []*actor.PID
		es.mu.Lock()
		for stream, ref := range es.m {
			if ref.inflight.Load() == 0 {
				delete(es.m, stream)
				stop = append(stop, ref.pid)
			}
		}
		left := len(es.m)
		es.mu.Unlock()
		for _, pid := range stop {
			if err := rt.system.Root.StopFuture(pid).Wait(); err != nil {
				rt.log.Warn("entity did not stop", "shard", shard, "err", err)
			}
		}
		if left == 0 {
			return nil
		}
		if !pause(ctx, d) {
			return fmt.Errorf("actors: stop shard %d: %d entities still busy: %w", shard, left, ctx.Err())
		}
	}
}

// ShardEntities is the number of live entities of shard.
func (rt *Runtime) ShardEntities(shard int) int {
	if shard < 0 || shard >= len(rt.entities) {
		return 0
	}
	es := &rt.entities[shard]
	es.mu.Lock()
	defer es.mu.Unlock()
	return len(es.m)
}

// ErrNoAmbassadors is returned by Call when the runtime has no ambassador
// host (Config.Ambassador is nil).
var ErrNoAmbassadors = errors.New("actors: no ambassador plugins configured")

// Call asks the ambassador plugin name to perform an outside call (an HTTP
// request to a partner API, with credentials the plugin holds). Entities'
// handlers are pure and never call out; reactors and Go actors do, and turn
// the reply into commands. Calls are bounded by ctx and by the plugin's own
// deadline; retries are the plugin's policy.
func (rt *Runtime) Call(ctx context.Context, name string, call *troupev1.AmbassadorCall) (*troupev1.AmbassadorReply, error) {
	if rt.cfg.Ambassador == nil {
		return nil, ErrNoAmbassadors
	}
	if rt.closed.Load() {
		return nil, ErrClosed
	}
	return rt.cfg.Ambassador(ctx, name, call)
}

// LiveEntities is the number of entities currently in memory.
func (rt *Runtime) LiveEntities() int {
	n := 0
	for i := range rt.entities {
		es := &rt.entities[i]
		es.mu.Lock()
		n += len(es.m)
		es.mu.Unlock()
	}
	return n
}

// Shutdown stops taking commands, waits (bounded by ctx) for the commands in
// flight to finish, then stops the entities and projections.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	rt.mu.Lock()
	rt.closing = true
	rt.mu.Unlock()
	done := rt.sends.close()
	var err error
	select {
	case <-done:
	default:
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("actors: shutdown: commands still in flight: %w", ctx.Err())
		}
	}
	return errors.Join(err, rt.Close())
}

// Close stops everything at once. It is idempotent.
func (rt *Runtime) Close() error {
	rt.closeOnce.Do(rt.close)
	return nil
}

func (rt *Runtime) close() {
	rt.mu.Lock()
	rt.closing = true
	rt.mu.Unlock()
	rt.sends.close()
	rt.closed.Store(true)
	rt.cancel()
	var futures []*actor.Future
	for i := range rt.entities {
		es := &rt.entities[i]
		es.mu.Lock()
		for _, ref := range es.m {
			futures = append(futures, rt.system.Root.StopFuture(ref.pid))
		}
		es.m = nil
		es.mu.Unlock()
	}
	for _, f := range futures {
		_ = f.Wait()
	}
	rt.mu.Lock()
	ps := make([]*projection, 0, len(rt.projections))
	for _, p := range rt.projections {
		ps = append(ps, p)
	}
	rt.mu.Unlock()
	for _, p := range ps {
		p.stop()
	}
	rt.wg.Wait()
	rt.dispatcher.stop()
	if rt.ownSys {
		rt.system.Shutdown()
	}
}
