package shards

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/troupe-dev/troupe/actors"
	"github.com/troupe-dev/troupe/cluster/lease"
)

// LeadersConfig configures Leaders. Self, Leases and View are required.
type LeadersConfig struct {
	// Self is this node's id (the lease holder).
	Self string
	// Leases grants the singletons' leases.
	Leases *lease.Store
	// View returns what membership says now.
	View func() View
	// TakeoverDelay is how long a member must have been dead before the
	// singletons it leads are taken over without waiting for their
	// leases to expire. Default 2 s.
	TakeoverDelay time.Duration
	// Retry is how often a standby node tries for a singleton's lease
	// (it learns of a release within this time). Default 100 ms.
	Retry time.Duration
	// Logger receives leadership changes. Default: discard.
	Logger *slog.Logger
}

// Leaders runs this node's campaigns for the cluster's singletons: one
// lease per singleton ("singleton-<name>"); the node that holds it runs
// the singleton, the others stand by and try again every Retry. It
// implements actors.Leader. Its methods are safe for concurrent use.
//
// Goroutines: one campaign per singleton, plus, while it leads, the
// singleton's Run and a watcher of its lease. Close stops them all.
type Leaders struct {
	cfg  LeadersConfig
	log  *slog.Logger
	dead deadSet

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	state map[string]*LeaderInfo
	order []string
}

var _ actors.Leader = (*Leaders)(nil)

// LeaderInfo describes one singleton as this node sees it.
type LeaderInfo struct {
	Name string
	// Leader is the node that holds the singleton's lease as this node
	// last saw it ("" unknown or free); Epoch its epoch.
	Leader string
	Epoch  uint64
	// Leading reports whether this node runs the singleton now.
	Leading bool
	// Since is when this node last saw the leadership change.
	Since time.Time
}

// NewLeaders validates cfg and returns Leaders campaigning for nothing yet.
func NewLeaders(cfg LeadersConfig) (*Leaders, error) {
	if cfg.TakeoverDelay == 0 {
		cfg.TakeoverDelay = 2 * time.Second
	}
	if cfg.Retry == 0 {
		cfg.Retry = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Self == "" || cfg.Leases == nil || cfg.View == nil {
		return nil, errors.New("shards: LeadersConfig needs Self, Leases and View")
	}
	if cfg.TakeoverDelay < 0 || cfg.Retry <= 0 {
		return nil, errors.New("shards: LeadersConfig: negative or zero duration")
	}
	l := &Leaders{cfg: cfg, log: cfg.Logger.With("component", "leaders"), dead: deadSet{delay: cfg.TakeoverDelay}, state: map[string]*LeaderInfo{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l, nil
}

// SingletonLease is the lease of a singleton.
func SingletonLease(name string) string { return "singleton-" + name }

// Lead starts campaigning for s.
func (l *Leaders) Lead(s actors.Singleton) {
	l.mu.Lock()
	if _, dup := l.state[s.Name]; dup || l.ctx.Err() != nil {
		l.mu.Unlock()
		return
	}
	l.state[s.Name] = &LeaderInfo{Name: s.Name, Since: time.Now()}
	l.order = append(l.order, s.Name)
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.campaign(s)
	}()
}

// Leaders describes every singleton this node campaigns for.
func (l *Leaders) Leaders() []LeaderInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]LeaderInfo, 0, len(l.order))
	for _, n := range l.order {
		out = append(out, *l.state[n])
	}
	slices.SortFunc(out, func(a, b LeaderInfo) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

// Close stops every campaign: a singleton running here is cancelled, and
// once its Run has returned its lease is released, so that a standby node
// takes it over at its next try. Bounded by ctx for the waits.
func (l *Leaders) Close(ctx context.Context) error {
	l.cancel()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shards: singletons still running: %w", ctx.Err())
	}
}

func (l *Leaders) saw(name, leader string, epoch uint64, leading bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state[name]
	if st.Leader != leader || st.Epoch != epoch || st.Leading != leading {
		st.Leader, st.Epoch, st.Leading, st.Since = leader, epoch, leading, time.Now()
	}
}

func (l *Leaders) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// campaign tries for s's lease until Close, running s whenever it holds it.
func (l *Leaders) campaign(s actors.Singleton) {
	name := SingletonLease(s.Name)
	failed := "" // the last failure logged (repeats go to debug)
	for l.ctx.Err() == nil {
		v := l.cfg.View()
		if !v.Majority {
			l.sleep(l.cfg.Retry)
			continue
		}
		dead := l.dead.takeoverable(v.Dead, time.Now())
		ls, err := l.cfg.Leases.Acquire(l.ctx, name, l.cfg.Self, lease.TakeOver(dead...))
		var held *lease.HeldError
		switch {
		case errors.As(err, &held):
			l.saw(s.Name, held.Holder, held.Epoch, false)
			l.sleep(l.cfg.Retry)
			continue
		case err != nil:
			if l.ctx.Err() == nil {
				lvl := slog.LevelWarn
				if err.Error() == failed {
					lvl = slog.LevelDebug
				}
				failed = err.Error()
				l.log.Log(l.ctx, lvl, "singleton lease not acquired", "singleton", s.Name, "err", err)
			}
			l.sleep(l.cfg.Retry)
			continue
		}
		failed = ""
		l.lead(s, ls)
	}
}

// lead runs s while this node holds ls, then releases the lease.
func (l *Leaders) lead(s actors.Singleton, ls lease.Lease) {
	k, err := l.cfg.Leases.Keep(ls)
	if err != nil {
		return
	}
	t0 := time.Now()
	l.saw(s.Name, l.cfg.Self, ls.Epoch, true)
	l.log.Info("leading singleton", "singleton", s.Name, "epoch", ls.Epoch)
	ctx, cancel := context.WithCancel(l.ctx)
	watched := make(chan struct{})
	go func() {
		// Stop when the lease is lost or this node loses the majority
		// (the others may take over after their delay).
		defer close(watched)
		t := time.NewTicker(l.cfg.Retry)
		defer t.Stop()
		for {
			select {
			case <-k.Done():
				cancel()
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if !l.cfg.View().Majority {
					l.log.Warn("singleton stopped: this node lost sight of the cluster's majority", "singleton", s.Name)
					cancel()
					return
				}
			}
		}
	}()
	actors.RunSingleton(ctx, s, ls.Epoch, l.log)
	cancel()
	<-watched
	err = k.Close()
	if err != nil && !errors.Is(err, lease.ErrLost) {
		l.log.Warn("singleton lease not released", "singleton", s.Name, "err", err)
	}
	l.saw(s.Name, "", 0, false)
	l.log.Info("singleton stopped here", "singleton", s.Name, "epoch", ls.Epoch, "led", time.Since(t0).Round(time.Millisecond))
}
