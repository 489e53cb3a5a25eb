// Package shards owns a node's shards in a cluster: it places the shards
// over the members (cluster/placement), takes a shard's lease (cluster/lease)
// before serving it, fences the shard's stream in the replicated journal
// with the lease's epoch, and moves shards when members join, leave or
// fail, draining what is in flight first. It implements actors.Placement:
// the runtime asks it, on every command, whether this node serves the
// entity's shard.
//
// The lease decides, membership informs (docs/adr/0014-sharding.md):
// membership chooses the target owner of each shard and says which nodes
// are dead (their leases may be taken over before they expire); only a
// held lease and a fenced stream make this node serve a shard, and the
// journal refuses this node's writes to a shard it no longer owns.
//
//	m, _ := shards.New(shards.Config{Self: "n1", Shards: 64, Leases: ls, View: view,
//		Fence: js.Acquire, Unfence: js.Release, Drain: rt.StopShard, Serve: subscribe})
//	m.Start()
//	defer m.Close(ctx)
package shards

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/cluster/lease"
	"github.com/troupe-dev/troupe/cluster/placement"
)

// View is what membership says now.
type View struct {
	// Alive lists the members that may own shards (alive, with the
	// shards role), this node included when it may.
	Alive []string
	// Dead lists members known failed or gone: their leases may be taken
	// over before they expire (after Config.TakeoverDelay).
	Dead []string
	// Majority reports whether this node sees a majority of the members
	// it knows alive. A node without it stops serving at once: it may be
	// on the minority side of a partition, where the others take its
	// shards over.
	Majority bool
}

// Config configures a Manager. Self, Shards, Leases, View, Fence,
// Unfence, Drain and Serve are required.
type Config struct {
	// Self is this node's id (the lease holder).
	Self string
	// Shards is the number of shards, fixed for the life of the cluster.
	Shards int
	// Leases grants the shards' leases.
	Leases *lease.Store
	// View returns what membership says now. Called by the manager's
	// goroutine; it must not block.
	View func() View
	// Fence makes this node the only writer of a shard's stream under
	// epoch (the replicated journal writes a takeover marker, after which
	// the previous owner's writes fail). Called after the lease is held.
	Fence func(ctx context.Context, shard int, epoch uint64) error
	// Unfence stops the journal taking this node's writes to shard.
	Unfence func(shard int)
	// Drain stops the shard's live entities once their commands in
	// flight are done (actors.Runtime.StopShard), bounded by ctx.
	Drain func(ctx context.Context, shard int) error
	// Serve starts taking forwarded commands for shard (a NATS
	// subscription that only the owner holds); stop ends it.
	Serve func(shard int) (stop func(), err error)
	// TakeoverDelay is how long a member must have been dead before its
	// leases are taken over without waiting for them to expire: time for
	// a member cut off by a partition to notice that it lost the majority
	// and stop serving. Default 2 s.
	TakeoverDelay time.Duration
	// DrainTimeout bounds the drain of a shard that moves. Default 10 s.
	DrainTimeout time.Duration
	// Interval is how often the manager reconciles without a trigger.
	// Default 1 s.
	Interval time.Duration
	// Retry is how often a shard targeted at this node but held by
	// another is tried again. Default 100 ms.
	Retry time.Duration
	// Logger receives moves (info) and failures (warn), with
	// component=shards. Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.TakeoverDelay == 0 {
		c.TakeoverDelay = 2 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.Interval == 0 {
		c.Interval = time.Second
	}
	if c.Retry == 0 {
		c.Retry = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every missing or invalid field of a defaulted Config.
func (c Config) Validate() error {
	var errs []error
	if c.Self == "" {
		errs = append(errs, errors.New("Self is required"))
	}
	if c.Shards < 1 || c.Shards > 4096 {
		errs = append(errs, fmt.Errorf("Shards %d: want 1 to 4096", c.Shards))
	}
	if c.Leases == nil || c.View == nil || c.Fence == nil || c.Unfence == nil || c.Drain == nil || c.Serve == nil {
		errs = append(errs, errors.New("Leases, View, Fence, Unfence, Drain and Serve are required"))
	}
	if c.TakeoverDelay < 0 || c.DrainTimeout <= 0 || c.Interval <= 0 || c.Retry <= 0 {
		errs = append(errs, errors.New("negative or zero duration"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shards: %w", err)
	}
	return nil
}

// State is what this node does with a shard.
type State int32

const (
	// Idle: another node owns the shard (or nobody, while it moves).
	Idle State = iota
	// Acquiring: the shard is targeted at this node, which is taking its
	// lease and fencing its stream.
	Acquiring
	// Serving: this node holds the lease and serves the shard.
	Serving
	// Releasing: the shard leaves this node (drain, release); commands
	// wait for the next owner.
	Releasing
)

func (s State) String() string {
	switch s {
	case Idle:
		return "idle"
	case Acquiring:
		return "acquiring"
	case Serving:
		return "serving"
	case Releasing:
		return "releasing"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Info describes one shard as this node sees it.
type Info struct {
	Shard int
	// State is this node's state for the shard.
	State State
	// Owner is the node serving the shard as far as this node knows: this
	// node when serving, else the lease holder last seen or the target.
	Owner string
	// Target is where placement wants the shard.
	Target string
	// Epoch is the lease's epoch when this node serves the shard.
	Epoch uint64
	// Since is when State last changed.
	Since time.Time
}

// shard is the manager's record of one shard.
type shard struct {
	n     int
	state atomic.Int32 // State; read without the lock on every command

	mu     sync.Mutex
	busy   bool // an acquire or release runs
	target string
	holder string    // the lease holder last seen ("" unknown)
	seen   time.Time // when holder was seen
	keeper *lease.Keeper
	epoch  uint64
	stop   func() // ends Serve
	since  time.Time
	next   time.Time // no acquire attempt before
	failed string    // the last acquire failure logged (repeats go to debug)
}

// Manager owns this node's shards. Its methods are safe for concurrent use.
//
// Goroutines: one reconciler (Start .. Close), one per shard operation in
// flight (acquire, release), and one per served shard watching its lease.
// Close stops all of them.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	shards []*shard

	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	trigger chan struct{}
	wg      sync.WaitGroup

	dead deadSet

	startOnce, closeOnce sync.Once
	closing              atomic.Bool
}

var _ actors.Placement = (*Manager)(nil)

// New validates cfg and returns a manager that serves nothing until Start.
func New(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg: cfg, log: cfg.Logger.With("component", "shards"),
		trigger: make(chan struct{}, 1), dead: deadSet{delay: cfg.TakeoverDelay},
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	now := time.Now()
	for i := range cfg.Shards {
		m.shards = append(m.shards, &shard{n: i, since: now})
	}
	return m, nil
}

// LeaseName is the lease of a shard.
func LeaseName(shard int) string { return "shard-" + strconv.Itoa(shard) }

// NumShards is the number of shards.
func (m *Manager) NumShards() int { return m.cfg.Shards }

// ShardOf maps an entity to its shard (actors.ShardOf).
func (m *Manager) ShardOf(kind, id string) int { return actors.ShardOf(kind, id, m.cfg.Shards) }

// Owner says who serves a shard: this node while it serves it; otherwise
// the owner it knows of, or "" while the shard moves.
func (m *Manager) Owner(n int) (string, bool) {
	if n < 0 || n >= len(m.shards) {
		return "", false
	}
	sh := m.shards[n]
	switch State(sh.state.Load()) {
	case Serving:
		return m.cfg.Self, true
	case Releasing, Acquiring:
		return "", false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// The holder is named while the sighting is fresh (this node is trying
	// for the shard); otherwise placement's target is the best guess.
	if sh.holder != "" && sh.holder != m.cfg.Self && time.Since(sh.seen) < 2*time.Second {
		return sh.holder, false
	}
	if sh.target != m.cfg.Self {
		return sh.target, false
	}
	return "", false
}

// Shards describes every shard as this node sees it.
func (m *Manager) Shards() []Info {
	out := make([]Info, 0, len(m.shards))
	for _, sh := range m.shards {
		owner, _ := m.Owner(sh.n)
		sh.mu.Lock()
		out = append(out, Info{Shard: sh.n, State: State(sh.state.Load()), Owner: owner, Target: sh.target, Epoch: sh.epoch, Since: sh.since})
		sh.mu.Unlock()
	}
	return out
}

// Start starts reconciling: the shards placed on this node are acquired,
// the others left (or handed over).
func (m *Manager) Start() {
	m.startOnce.Do(func() {
		m.wg.Add(1)
		go m.run()
	})
}

// Trigger asks for a reconciliation now (membership changed). It never
// blocks.
func (m *Manager) Trigger() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// Fenced tells the manager that the journal refused this node's write to
// shard because a newer owner fenced it: the shard is lost now, whatever
// the lease keeper believes.
func (m *Manager) Fenced(n int) {
	if n < 0 || n >= len(m.shards) || m.closing.Load() {
		return
	}
	m.log.Warn("shard fenced by a newer owner: stopping it here", "shard", n)
	m.spawn(func() { m.lose(m.shards[n], "fenced in the journal") })
}

// Close hands every served shard over: it stops taking commands for it,
// drains it, stops the journal's writes and releases the lease, so that
// the next owner can take it at once. Bounded by ctx; then it stops the
// manager's goroutines.
func (m *Manager) Close(ctx context.Context) error {
	var err error
	m.closeOnce.Do(func() {
		m.closing.Store(true)
		m.cancel()
		m.wg.Wait() // the reconciler and the operations in flight end
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, sh := range m.shards {
			if State(sh.state.Load()) != Serving {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if e := m.release(ctx, sh, "node stopping"); e != nil {
					mu.Lock()
					err = errors.Join(err, e)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	})
	return err
}

// spawn runs f on a goroutine the manager waits for at Close.
func (m *Manager) spawn(f func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

func (m *Manager) setState(sh *shard, s State) {
	sh.state.Store(int32(s))
	sh.since = time.Now()
}

func (m *Manager) run() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.Retry)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.trigger:
		case now := <-t.C:
			// Between triggers: retry what is pending often, the
			// whole map every Interval.
			if now.Sub(last) < m.cfg.Interval && !m.pending() {
				continue
			}
		}
		last = time.Now()
		m.reconcile()
	}
}

// pending reports whether a shard waits for an acquire attempt.
func (m *Manager) pending() bool {
	for _, sh := range m.shards {
		sh.mu.Lock()
		p := !sh.busy && sh.target == m.cfg.Self && State(sh.state.Load()) == Idle
		sh.mu.Unlock()
		if p {
			return true
		}
	}
	return false
}

// reconcile moves every shard towards the placement of the current view.
func (m *Manager) reconcile() {
	v := m.cfg.View()
	now := time.Now()
	if !v.Majority {
		// Cut off from the majority: they will take the shards over;
		// stop serving them first.
		for _, sh := range m.shards {
			sh.mu.Lock()
			if !sh.busy && State(sh.state.Load()) == Serving {
				sh.busy = true
				m.spawn(func() { m.lose(sh, "this node lost sight of the cluster's majority") })
			}
			sh.target = ""
			sh.mu.Unlock()
		}
		return
	}
	dead := m.dead.takeoverable(v.Dead, now)
	targets := placement.Assign(m.cfg.Shards, v.Alive)
	alive := make(map[string]bool, len(v.Alive))
	for _, id := range v.Alive {
		alive[id] = true
	}
	for _, sh := range m.shards {
		target := targets[sh.n]
		sh.mu.Lock()
		sh.target = target
		if !alive[sh.holder] {
			sh.holder = "" // a holder that left or died is not the owner to name
		}
		state := State(sh.state.Load())
		switch {
		case sh.busy:
		case state == Idle && target == m.cfg.Self && !now.Before(sh.next):
			sh.busy = true
			m.setState(sh, Acquiring)
			m.spawn(func() { m.acquire(sh, dead) })
		case state == Serving && target != m.cfg.Self && target != "":
			sh.busy = true
			m.spawn(func() {
				if err := m.release(m.ctx, sh, "placed on "+target); err != nil {
					m.log.Warn("shard handover incomplete", "shard", sh.n, "err", err)
				}
			})
		}
		sh.mu.Unlock()
	}
}

// deadSet remembers since when members are dead, so that their leases
// are taken over only after a delay.
type deadSet struct {
	delay time.Duration
	mu    sync.Mutex
	since map[string]time.Time
}

// takeoverable returns the members of dead that have been dead for at
// least the delay; members no longer listed are forgotten.
func (d *deadSet) takeoverable(dead []string, now time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := make(map[string]time.Time, len(dead))
	var out []string
	for _, id := range dead {
		since, ok := d.since[id]
		if !ok {
			since = now
		}
		seen[id] = since
		if now.Sub(since) >= d.delay {
			out = append(out, id)
		}
	}
	d.since = seen
	slices.Sort(out)
	return out
}

// acquire takes a shard's lease, fences its stream and starts serving it.
func (m *Manager) acquire(sh *shard, dead []string) {
	ok := false
	defer func() {
		sh.mu.Lock()
		sh.busy = false
		if !ok {
			m.setState(sh, Idle)
			sh.next = time.Now().Add(m.cfg.Retry)
		}
		sh.mu.Unlock()
		if !ok {
			m.Trigger()
		}
	}()
	name := LeaseName(sh.n)
	l, err := m.cfg.Leases.Acquire(m.ctx, name, m.cfg.Self, lease.TakeOver(dead...))
	var held *lease.HeldError
	switch {
	case errors.As(err, &held):
		sh.mu.Lock()
		sh.holder, sh.seen = held.Holder, time.Now()
		sh.mu.Unlock()
		return
	case err != nil:
		if m.ctx.Err() == nil {
			sh.mu.Lock()
			repeat := sh.failed == err.Error()
			sh.failed = err.Error()
			sh.mu.Unlock()
			lvl := slog.LevelWarn
			if repeat {
				lvl = slog.LevelDebug
			}
			m.log.Log(m.ctx, lvl, "shard lease not acquired", "shard", sh.n, "err", err)
		}
		return
	}
	sh.mu.Lock()
	sh.failed = ""
	sh.mu.Unlock()
	k, err := m.cfg.Leases.Keep(l)
	if err != nil {
		m.log.Warn("shard lease lost at once", "shard", sh.n, "err", err)
		return
	}
	fctx, cancel := context.WithTimeout(m.ctx, 15*time.Second)
	err = m.cfg.Fence(fctx, sh.n, l.Epoch)
	cancel()
	if err != nil {
		m.log.Warn("shard stream not fenced; releasing its lease", "shard", sh.n, "epoch", l.Epoch, "err", err)
		_ = k.Close()
		return
	}
	// No entity of the shard may survive from an earlier ownership of it
	// here (a drain that timed out): its state could be behind what the
	// owners since then appended.
	dctx, dcancel := context.WithTimeout(m.ctx, m.cfg.DrainTimeout)
	if err := m.cfg.Drain(dctx, sh.n); err != nil {
		m.log.Warn("stale entities of the shard still busy", "shard", sh.n, "err", err)
	}
	dcancel()
	stop, err := m.cfg.Serve(sh.n)
	if err != nil {
		m.log.Warn("shard not served; releasing it", "shard", sh.n, "err", err)
		m.cfg.Unfence(sh.n)
		_ = k.Close()
		return
	}
	sh.mu.Lock()
	sh.keeper, sh.epoch, sh.stop, sh.holder = k, l.Epoch, stop, m.cfg.Self
	m.setState(sh, Serving)
	sh.mu.Unlock()
	ok = true
	m.log.Info("serving shard", "shard", sh.n, "epoch", l.Epoch)
	m.spawn(func() {
		select {
		case <-k.Done():
			if !m.closing.Load() && k.Err() != nil && !errors.Is(k.Err(), lease.ErrClosed) {
				m.log.Warn("shard lease lost", "shard", sh.n, "err", k.Err())
				m.lose(sh, "lease lost")
			}
		case <-m.ctx.Done():
		}
	})
}

// release hands a served shard over: commands wait for the next owner,
// forwarded ones go elsewhere, the entities finish and stop, the journal
// stops taking this node's writes, and the lease is released.
func (m *Manager) release(ctx context.Context, sh *shard, why string) error {
	t0 := time.Now()
	sh.mu.Lock()
	if State(sh.state.Load()) != Serving {
		sh.busy = false
		sh.mu.Unlock()
		return nil
	}
	m.setState(sh, Releasing)
	k, stop := sh.keeper, sh.stop
	sh.mu.Unlock()
	stop()
	dctx, cancel := context.WithTimeout(ctx, m.cfg.DrainTimeout)
	derr := m.cfg.Drain(dctx, sh.n)
	cancel()
	m.cfg.Unfence(sh.n)
	rerr := k.Close()
	sh.mu.Lock()
	sh.keeper, sh.stop, sh.epoch, sh.busy, sh.holder = nil, nil, 0, false, sh.target
	m.setState(sh, Idle)
	sh.mu.Unlock()
	m.log.Info("shard handed over", "shard", sh.n, "why", why, "took", time.Since(t0).Round(time.Microsecond))
	if rerr != nil && errors.Is(rerr, lease.ErrLost) {
		rerr = nil // taken over meanwhile: nothing to release
	}
	return errors.Join(derr, rerr)
}

// lose stops serving a shard this node may no longer own: the journal
// stops taking its writes at once (before the drain), then the entities
// stop.
func (m *Manager) lose(sh *shard, why string) {
	sh.mu.Lock()
	if State(sh.state.Load()) != Serving {
		// Another operation got there first (and owns busy).
		sh.mu.Unlock()
		return
	}
	m.setState(sh, Releasing)
	k, stop := sh.keeper, sh.stop
	sh.mu.Unlock()
	m.cfg.Unfence(sh.n)
	stop()
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.DrainTimeout)
	if err := m.cfg.Drain(ctx, sh.n); err != nil {
		m.log.Warn("shard drain incomplete", "shard", sh.n, "err", err)
	}
	cancel()
	_ = k.Close()
	sh.mu.Lock()
	sh.keeper, sh.stop, sh.epoch, sh.busy, sh.holder = nil, nil, 0, false, ""
	m.setState(sh, Idle)
	sh.next = time.Now().Add(m.cfg.Retry)
	sh.mu.Unlock()
	m.log.Info("shard stopped here", "shard", sh.n, "why", why)
}
