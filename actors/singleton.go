package actors

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Singleton is work that runs on exactly one node of a cluster at a time:
// a leader, such as a scheduler or a monitor. In a cluster each singleton
// runs under a lease (its epoch is a fencing token that rises with every
// new holder); when its node stops, the singleton moves to another node
// (on a graceful stop within a fraction of a second), and when its node
// dies, another node takes it over once membership reports the death. On
// a single node it simply runs, with epoch 0.
//
// "Exactly one at a time" holds for what the lease can enforce: a node
// that loses its lease (cut off by a partition) cancels Run's context, but
// Run may still be between two steps when the next holder starts. Side
// effects of a singleton should therefore be commands with idempotency
// keys derived from what they react to (not from the epoch), so that a
// repeat by the next leader takes effect once.
type Singleton struct {
	// Name identifies the singleton across the cluster (letters, digits,
	// '-', '_', '.', up to 64 bytes). Every node declares the same ones.
	Name string
	// Run does the singleton's work until ctx ends (the lease is lost or
	// the node stops); it should then return promptly. A Run that returns
	// early is started again after a back-off while the node still leads;
	// an error is logged.
	Run func(ctx context.Context, epoch uint64) error
}

var singletonName = regexp.MustCompile(`^[-_.a-zA-Z0-9]{1,64}$`)

// Leader runs singletons where the cluster decides. The cluster provides
// one (a lease per singleton, see cluster/shards); without it the runtime
// runs every singleton itself.
type Leader interface {
	// Lead starts campaigning for s: from now on s runs on whichever node
	// wins its lease. It returns at once. The Leader's owner stops it.
	Lead(s Singleton)
}

// RegisterSingleton declares a singleton; call before Start. A name
// declared twice is refused.
func (rt *Runtime) RegisterSingleton(s Singleton) error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch {
	case rt.started || rt.closing:
		return fmt.Errorf("actors: singleton %q registered after Start or Close", s.Name)
	case !singletonName.MatchString(s.Name):
		return fmt.Errorf("actors: singleton name %q: want 1 to 64 letters, digits, '-', '_' or '.'", s.Name)
	case s.Run == nil:
		return fmt.Errorf("actors: singleton %q has no Run", s.Name)
	}
	for _, have := range rt.singletons {
		if have.Name == s.Name {
			return fmt.Errorf("actors: singleton %q declared twice", s.Name)
		}
	}
	rt.singletons = append(rt.singletons, s)
	return nil
}

// Singletons lists the declared singletons.
func (rt *Runtime) Singletons() []Singleton {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]Singleton(nil), rt.singletons...)
}

// startSingletons runs the singletons: through Config.Leader, or here.
// Called by Start with rt.mu held.
func (rt *Runtime) startSingletons() {
	for _, s := range rt.singletons {
		if rt.cfg.Leader != nil {
			rt.cfg.Leader.Lead(s)
			continue
		}
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			RunSingleton(rt.ctx, s, 0, rt.log)
		}()
	}
}

// RunSingleton runs s with epoch until ctx ends, starting Run again after
// a back-off (100 ms doubling to 5 s) when it returns early. A Leader
// calls it while it holds s's lease.
func RunSingleton(ctx context.Context, s Singleton, epoch uint64, log interface {
	Error(msg string, args ...any)
}) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := runGuarded(ctx, s, epoch)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Error("singleton failed; restarting", "singleton", s.Name, "epoch", epoch, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// runGuarded runs s once, turning a panic into an error.
func runGuarded(ctx context.Context, s Singleton, epoch uint64) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	err = s.Run(ctx, epoch)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil
	}
	return err
}
