package lease

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Keeper holds one lease in the background: it renews it every
// Config.RenewEvery, retries a renewal that goes unanswered until the
// lease's deadline, and reports the loss of the lease on Done. Its methods
// are safe for concurrent use. It owns one goroutine, and one more while a
// renewal is in flight; Close stops both and waits for them.
type Keeper struct {
	s   *Store
	log *slog.Logger

	mu    sync.Mutex // guards lease, err
	lease Lease
	err   error // nil while holding; a *LostError or ErrClosed after

	cancel   context.CancelFunc // cancels the renewals' context (Close)
	stop     chan struct{}      // closed by Close: the goroutine ends after its current renewal
	exited   chan struct{}      // closed when the goroutine has returned
	done     chan struct{}      // closed when the keeper stops holding
	doneOnce sync.Once

	closeOnce sync.Once
	closeErr  error
}

// Keep starts keeping l, which Acquire (or Renew) returned and which must
// still be valid.
func (s *Store) Keep(l Lease) (*Keeper, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if !l.Valid(time.Now()) {
		return nil, s.lost(l, Expired, 0, nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Keeper{
		s:      s,
		log:    s.log.With("lease", l.Name, "node", l.Holder),
		lease:  l,
		cancel: cancel,
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
		done:   make(chan struct{}),
	}
	go k.run(ctx, l)
	return k, nil
}

// Lease returns the lease as last renewed, and whether its holder may act
// as owner now: false after a loss or Close, and from Lease.Expires on even
// before the keeper's goroutine has noticed. Check it right before each
// act of ownership, and fence the act with the epoch.
func (k *Keeper) Lease() (Lease, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lease, k.err == nil && k.lease.Valid(time.Now())
}

// Done is closed when the keeper stops holding the lease: it was lost (Err
// is a *LostError) or closed (Err is ErrClosed).
func (k *Keeper) Done() <-chan struct{} { return k.done }

// Err is nil while the keeper holds the lease, then says why it stopped.
func (k *Keeper) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// Close stops renewing and, when the lease is still held, stops holding
// it (Done closes, Lease reports false) and then releases it, so another
// holder can acquire it at once. A renewal in flight is cancelled rather
// than waited for (a handover should not wait for a request timeout);
// if it landed all the same, the revision it wrote is released. Close
// returns the release's error (a *LostError if the lease had been taken
// over unnoticed). It is idempotent.
func (k *Keeper) Close() error {
	k.closeOnce.Do(func() {
		close(k.stop)
		k.cancel()
		<-k.exited

		k.mu.Lock()
		l, held := k.lease, k.err == nil
		if held {
			k.err = ErrClosed
		}
		k.mu.Unlock()
		k.doneOnce.Do(func() { close(k.done) })
		if !held {
			return
		}
		// The holder has stopped acting as owner (above) before the
		// release lets anybody else in.
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(k.s.cfg.Attempts)*k.s.cfg.RequestTimeout)
		defer cancel()
		k.closeErr = k.s.releaseOwn(ctx, l)
	})
	return k.closeErr
}

func (k *Keeper) lose(err error) {
	k.mu.Lock()
	if k.err == nil {
		k.err = err
	}
	k.mu.Unlock()
	k.doneOnce.Do(func() { close(k.done) })
}

func (k *Keeper) run(parent context.Context, l Lease) {
	defer close(k.exited)
	cfg := k.s.cfg
	retryWait := min(cfg.RenewEvery/4, 250*time.Millisecond)
	// The first renewal is due RenewEvery after the write that granted l.
	next := l.Expires.Add(cfg.Margin - cfg.TTL + cfg.RenewEvery)
	var lastErr error
	type result struct {
		l   Lease
		err error
	}
	results := make(chan result, 1)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		t.Reset(min(time.Until(next), time.Until(l.Expires)))
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		if !time.Now().Before(l.Expires) {
			k.lose(k.s.lost(l, Expired, 0, lastErr))
			return
		}
		start := time.Now()
		// A renewal must not outlive the lease: one confirmed later could
		// race with the server's expiry (see Renew). The renewal runs in a
		// goroutine of its own so that the loss is reported at the
		// deadline even if the client overruns its context.
		ctx, cancel := context.WithDeadline(parent, l.Expires)
		go func() {
			nl, err := k.s.Renew(ctx, l)
			results <- result{nl, err}
		}()
		t.Reset(time.Until(l.Expires))
		var r result
		select {
		case r = <-results:
		case <-t.C:
			k.lose(k.s.lost(l, Expired, 0, lastErr))
			r = <-results
			cancel()
			if r.err == nil {
				// Renewed, but confirmed too late to count: let it go.
				rctx, rcancel := context.WithTimeout(parent, cfg.RequestTimeout)
				_ = k.s.Release(rctx, r.l)
				rcancel()
			}
			return
		}
		cancel()
		switch {
		case r.err == nil:
			l, lastErr = r.l, nil
			k.mu.Lock()
			k.lease = l
			k.mu.Unlock()
			next = start.Add(cfg.RenewEvery)
			k.log.Debug("lease renewed", "epoch", l.Epoch, "revision", l.Revision)
		case errors.Is(r.err, ErrLost):
			k.lose(r.err)
			return
		default:
			select {
			case <-k.stop:
				return
			default:
			}
			lastErr = r.err
			next = time.Now().Add(retryWait)
			k.log.Warn("lease renewal failed, retrying until its deadline", "epoch", l.Epoch,
				"deadline_in", time.Until(l.Expires).Round(time.Millisecond), "err", r.err)
		}
	}
}
