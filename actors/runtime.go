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
	"github.com/troupe-dev/troupe/journal"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

var (
	// ErrClosed is returned by a runtime that is shutting down or closed.
	ErrClosed = errors.New("actors: runtime closed")
)

// UnknownKindError is a command for a kind nobody registered.
type UnknownKindError struct{ Kind string }

func (e *UnknownKindError) Error() string { return fmt.Sprintf("actors: unknown entity kind %q", e.Kind) }

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

// Config configures a Runtime. The zero value is not usable: Journal and
// ReadStore are required.
type Config struct {
	// Journal is the write store the entities append to.
	Journal journal.Store
	// ReadStore holds the read models and projection checkpoints; it is
	// kept apart from the journal (CQRS). Required when projections are
	// registered.
	ReadStore *ReadStore
	// System is the actor system entities run in. Default: a new one.
	System *actor.ActorSystem
	// Intercept, when set, runs before every command delivery.
	Intercept Interceptor
	// MailboxSize bounds the commands waiting for one entity. Default 1024.
	MailboxSize int
	// QueryTimeout bounds a query's wait for a minimum position. Default 5s.
	QueryTimeout time.Duration
	// Logger receives the runtime's logs. Default: discard.
	Logger *slog.Logger
}

// Runtime hosts entity kinds, projections and queries on one node.
//
// Goroutines: one actor per live entity (owned by the actor system, stopped
// by Shutdown/Close) and one goroutine per projection (started by Start,
// stopped and waited for by Shutdown/Close). Lock order: mu before any
// projection lock.
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

	mu          sync.Mutex
	kinds       map[string]Behavior
	entities    map[string]*entityRef
	projections map[string]*projection
	queries     map[string]Query
	started     bool
	closing     bool

	sends sync.WaitGroup
	wg    sync.WaitGroup
}

type entityRef struct {
	stream   string
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
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rt := &Runtime{
		cfg:         cfg,
		journal:     cfg.Journal,
		system:      cfg.System,
		log:         cfg.Logger,
		kinds:       map[string]Behavior{},
		entities:    map[string]*entityRef{},
		projections: map[string]*projection{},
		queries:     map[string]Query{},
	}
	if rt.system == nil {
		rt.system = NewSystem(cfg.Logger)
		rt.ownSys = true
	}
	rt.ctx, rt.cancel = context.WithCancel(context.Background())
	return rt, nil
}

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
	if len(rt.projections) > 0 && rt.cfg.ReadStore == nil {
		return errors.New("actors: projections registered without Config.ReadStore")
	}
	for _, p := range rt.projections {
		if err := p.load(); err != nil {
			return err
		}
	}
	for _, p := range rt.projections {
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			p.run(rt.ctx)
		}()
	}
	rt.started = true
	return nil
}

// Send delivers one command to its entity and waits for the outcome. The
// outcome is returned only after the events the command decided are durable
// in the journal.
func (rt *Runtime) Send(ctx context.Context, cmd *troupev1.Command) (*Outcome, error) {
	rt.mu.Lock()
	if rt.closing || !rt.started {
		rt.mu.Unlock()
		return nil, ErrClosed
	}
	rt.sends.Add(1)
	defer rt.sends.Done()
	k, ok := rt.kinds[cmd.GetKind()]
	rt.mu.Unlock()
	if !ok {
		return nil, &UnknownKindError{Kind: cmd.GetKind()}
	}
	stream := journal.StreamID(cmd.GetKind(), cmd.GetEntityId())
	if _, _, err := journal.ParseStream(stream); err != nil {
		return nil, err
	}
	if !hasCommand(k, cmd.GetType()) {
		return nil, &UnknownCommandError{Kind: k.Name(), Type: cmd.GetType()}
	}
	if rt.cfg.Intercept != nil {
		if err := rt.cfg.Intercept(ctx, cmd); err != nil {
			return nil, err
		}
	}
	ref := rt.entity(k, cmd.GetEntityId(), stream)
	if n := ref.inflight.Add(1); int(n) > rt.cfg.MailboxSize {
		ref.inflight.Add(-1)
		return nil, &MailboxFullError{Stream: stream, Size: rt.cfg.MailboxSize}
	}
	reply := make(chan result, 1)
	rt.system.Root.Send(ref.pid, &delivery{ctx: ctx, cmd: cmd, reply: reply})
	select {
	case r := <-reply:
		return r.out, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func hasCommand(k Behavior, typ string) bool {
	for _, t := range k.CommandTypes() {
		if t == typ {
			return true
		}
	}
	return false
}

// entity finds or spawns the actor of one entity.
func (rt *Runtime) entity(k Behavior, id, stream string) *entityRef {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if ref, ok := rt.entities[stream]; ok {
		return ref
	}
	ref := &entityRef{stream: stream}
	a := &entityActor{b: k.newEntity(rt, id), rt: rt, ref: ref}
	ref.pid = rt.system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return a }))
	rt.entities[stream] = ref
	return ref
}

// Shutdown stops taking commands, waits (bounded by ctx) for the commands in
// flight to finish, then stops the entities and projections.
func (rt *Runtime) Shutdown(ctx context.Context) error {
	rt.mu.Lock()
	rt.closing = true
	rt.mu.Unlock()
	done := make(chan struct{})
	go func() { rt.sends.Wait(); close(done) }()
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
	rt.mu.Lock()
	rt.closing = true
	refs := rt.entities
	rt.entities = map[string]*entityRef{}
	rt.mu.Unlock()
	rt.cancel()
	futures := make([]*actor.Future, 0, len(refs))
	for _, ref := range refs {
		futures = append(futures, rt.system.Root.StopFuture(ref.pid))
	}
	for _, f := range futures {
		_ = f.Wait()
	}
	rt.wg.Wait()
	if rt.ownSys {
		rt.system.Shutdown()
	}
	return nil
}
