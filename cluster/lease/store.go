package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// acquireRounds bounds how many times Acquire re-reads after losing a
// compare-and-set to another writer.
const acquireRounds = 10

// Lease is one holder's ownership of a name, as Acquire or Renew returned
// it. It is a value: Renew returns a new one.
type Lease struct {
	Name   string // the lease (a KV key)
	Holder string // who holds it (a node id)
	// Epoch is the bucket revision that made Holder the owner: the fencing
	// token. It rises strictly across the holders of a name (revisions
	// rise strictly across the whole bucket) and stays the same across
	// renewals.
	Epoch uint64
	// Revision is the bucket revision of this holder's latest write: the
	// compare-and-set token of the next Renew or Release.
	Revision uint64
	// Expires is when the holder must stop acting as owner: the start of
	// the write that granted or renewed the lease (this process's monotonic
	// clock) plus TTL minus Margin. The server expires the entry no earlier
	// than TTL after it stored it, which is after that start, so no other
	// holder can be granted the lease before Expires + Margin (except by an
	// explicit takeover of a dead holder, see TakeOver).
	Expires time.Time
}

// Valid reports whether the holder may still act as owner at now.
func (l Lease) Valid(now time.Time) bool { return l.Epoch != 0 && now.Before(l.Expires) }

func (l Lease) check() error {
	if err := checkName(l.Name); err != nil {
		return err
	}
	if err := checkHolder(l.Holder); err != nil {
		return err
	}
	if l.Epoch == 0 || l.Revision < l.Epoch {
		return fmt.Errorf("%w: %q epoch %d revision %d (not from Acquire)", ErrInvalidLease, l.Name, l.Epoch, l.Revision)
	}
	return nil
}

// Entry is what the bucket holds for a name, as one read saw it.
type Entry struct {
	Name     string
	Holder   string // "" when nobody holds it (never acquired, released or expired)
	Epoch    uint64 // the holder's epoch; 0 when free
	Revision uint64 // the key's last revision; 0 when the key has no entry at all
	// Written is the server's time of the last write, TTL the entry's TTL
	// (0 when free): unless renewed it expires at Written + TTL.
	Written time.Time
	TTL     time.Duration
}

// Store grants leases over one KV bucket. Its methods are safe for
// concurrent use. It owns no goroutines and holds nothing to close; the
// JetStream connection stays the caller's.
type Store struct {
	cfg    Config
	log    *slog.Logger
	js     jetstream.JetStream
	stream string // the bucket's stream, KV_<bucket>
	prefix string // the subject prefix of keys, $KV.<bucket>.
}

// Open binds a Store to cfg.Bucket, creating the bucket when it is missing
// (retrying until ctx ends while JetStream is still electing its leaders).
// An existing bucket must allow per-message TTLs (LimitMarkerTTL set).
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
		if js.Conn().ConnectedClusterName() != "" {
			cfg.Replicas = 3
		}
	}
	s := &Store{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "lease"),
		js:     js,
		stream: "KV_" + cfg.Bucket,
		prefix: "$KV." + cfg.Bucket + ".",
	}
	if err := s.openBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) openBucket(ctx context.Context) error {
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, backoff(attempt, 50*time.Millisecond, time.Second)); err != nil {
				return fmt.Errorf("lease: open bucket %q: %w (last: %v)", s.cfg.Bucket, err, last)
			}
		}
		// Each request bounded: a create racing with another node's
		// create of the same bucket in another configuration may never
		// be answered; binding to the winner's bucket is the way out.
		actx, cancel := context.WithTimeout(ctx, 5*s.cfg.RequestTimeout)
		_, err := s.js.KeyValue(actx, s.cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			_, err = s.js.CreateKeyValue(actx, jetstream.KeyValueConfig{
				Bucket:         s.cfg.Bucket,
				Description:    "troupe leases (cluster/lease)",
				History:        1,
				Replicas:       s.cfg.Replicas,
				LimitMarkerTTL: s.cfg.MarkerTTL, // also turns on AllowMsgTTL
			})
			if errors.Is(err, jetstream.ErrBucketExists) {
				cancel()
				continue // created by someone else meanwhile: bind to it
			}
		}
		cancel()
		if err != nil {
			last = err
			if errors.Is(err, jetstream.ErrBadBucket) {
				return fmt.Errorf("lease: open bucket %q: %w", s.cfg.Bucket, err)
			}
			continue
		}
		st, err := s.js.Stream(ctx, s.stream)
		if err != nil {
			last = err
			continue
		}
		if c := st.CachedInfo().Config; !c.AllowMsgTTL {
			return fmt.Errorf("lease: bucket %q does not allow per-key TTLs: it was created without LimitMarkerTTL; leases need them (delete the bucket or use another)", s.cfg.Bucket)
		}
		return nil
	}
}

// Config returns the store's configuration with defaults applied.
func (s *Store) Config() Config { return s.cfg }

// AcquireOption modifies Acquire.
type AcquireOption func(*acquireOptions)

type acquireOptions struct {
	dead map[string]bool
}

// TakeOver lets Acquire take a lease at once, before it expires, from a
// holder listed as dead (membership marked the node failed). The takeover
// is a compare-and-set on the revision Acquire read, so of several
// contenders exactly one wins. It gives up the time guarantee of Expires:
// a holder wrongly declared dead (a partition) keeps believing it owns
// the lease until its next renewal fails, so its writes must be fenced by
// the epoch (the lease decides, membership informs).
func TakeOver(dead ...string) AcquireOption {
	return func(o *acquireOptions) {
		if o.dead == nil {
			o.dead = make(map[string]bool, len(dead))
		}
		for _, d := range dead {
			o.dead[d] = true
		}
	}
}

// Acquire makes holder the owner of name when nobody holds it (never
// acquired, released, or expired at the server), or when the current
// holder is holder itself (a restarted node takes its lease back under a
// new epoch, fencing its earlier self) or is listed in TakeOver. Otherwise
// it returns a *HeldError.
//
// Ownership is decided only by the compare-and-set writes' results. The
// read that precedes them (from the stream's leader) only chooses the
// expected revision and the error to report: it may be stale during a
// leader change, which costs a retry or a HeldError, never a second owner.
//
// An ErrUnavailable result leaves the outcome unknown: the grant may still
// be applied later, unrenewed, and expire after the TTL; Acquire again by
// the same holder takes it back.
func (s *Store) Acquire(ctx context.Context, name, holder string, opts ...AcquireOption) (Lease, error) {
	if err := checkName(name); err != nil {
		return Lease{}, err
	}
	if err := checkHolder(holder); err != nil {
		return Lease{}, err
	}
	var o acquireOptions
	for _, opt := range opts {
		opt(&o)
	}
	data, err := json.Marshal(record{Holder: holder, TTL: int64(s.cfg.TTL / time.Second)})
	if err != nil {
		return Lease{}, err
	}
	for round := range acquireRounds {
		if round > 0 {
			// Another writer won the last compare-and-set; let replicas
			// and leadership settle before reading again.
			if err := sleep(ctx, backoff(round, 5*time.Millisecond, 200*time.Millisecond)); err != nil {
				return Lease{}, fmt.Errorf("lease: acquire %q: %w", name, err)
			}
		}
		e, err := s.readRetry(ctx, name)
		if err != nil {
			return Lease{}, fmt.Errorf("lease: acquire %q: %w", name, err)
		}
		expected := e.rev
		if e.live {
			if e.holder != holder && !o.dead[e.holder] {
				return Lease{}, &HeldError{Name: name, Holder: e.holder, Epoch: e.epoch, ExpiresIn: e.expiresIn(time.Now())}
			}
			// Take over in two compare-and-sets: first replace the live
			// entry by a tombstone, then grant on the tombstone. Granting
			// directly on a live entry could race with the server's expiry
			// of that entry: the expiry marker, decided before our write
			// and applied after it, would roll our grant away while we
			// believe we hold it. A tombstone never turns into a marker.
			tomb, err := s.write(ctx, write{name: name, expected: e.rev, purge: true, ttl: s.cfg.MarkerTTL})
			if isCAS(err) {
				continue
			}
			if err != nil {
				return Lease{}, fmt.Errorf("lease: acquire %q: take over from %q: %w", name, e.holder, err)
			}
			s.log.Info("lease taken over", "lease", name, "node", holder, "from", e.holder, "epoch", e.epoch)
			expected = tomb
		}
		start := time.Now()
		rev, err := s.write(ctx, write{name: name, expected: expected, data: data, ttl: s.cfg.TTL})
		if isCAS(err) {
			continue
		}
		if err != nil {
			return Lease{}, fmt.Errorf("lease: acquire %q: %w", name, err)
		}
		l := Lease{Name: name, Holder: holder, Epoch: rev, Revision: rev, Expires: start.Add(s.cfg.TTL - s.cfg.Margin)}
		s.log.Debug("lease acquired", "lease", name, "node", holder, "epoch", rev)
		return l, nil
	}
	return Lease{}, fmt.Errorf("%w: %q: %d rounds lost a compare-and-set", ErrContended, name, acquireRounds)
}

// Renew extends l by the TTL if it is still ours: a compare-and-set on
// l.Revision that writes a new entry with the TTL. (kv.Update would drop
// the per-key TTL, so the write is a publish to the key's subject with
// Nats-Expected-Last-Subject-Sequence and Nats-TTL.)
//
// It returns a *LostError when the compare-and-set fails (Superseded), when
// l had already expired (Expired: the holder stopped acting as owner and a
// renewal must not revive it), or when the renewal was confirmed only
// after l.Expires (Expired: a renewal applied that late may race with the
// server's expiry of the old entry; the new entry is then released). A
// request that times out is re-read and resent under the same message id,
// which the server deduplicates, up to Config.Attempts times; then it
// returns ErrUnavailable and l stays valid until l.Expires, no longer.
func (s *Store) Renew(ctx context.Context, l Lease) (Lease, error) {
	if err := l.check(); err != nil {
		return Lease{}, err
	}
	start := time.Now()
	if !start.Before(l.Expires) {
		return Lease{}, s.lost(l, Expired, 0, nil)
	}
	data, err := json.Marshal(record{Holder: l.Holder, Epoch: l.Epoch, TTL: int64(s.cfg.TTL / time.Second)})
	if err != nil {
		return Lease{}, err
	}
	rev, err := s.write(ctx, write{name: l.Name, expected: l.Revision, data: data, ttl: s.cfg.TTL})
	var ce *casError
	switch {
	case errors.As(err, &ce):
		return Lease{}, s.lost(l, Superseded, ce.actual, nil)
	case err != nil:
		return Lease{}, fmt.Errorf("lease: renew %q epoch %d: %w", l.Name, l.Epoch, err)
	}
	if !time.Now().Before(l.Expires) {
		late := l
		late.Revision = rev
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RequestTimeout)
		rerr := s.Release(rctx, late)
		cancel()
		return Lease{}, s.lost(l, Expired, 0, fmt.Errorf("renewal confirmed after the deadline (released: %v)", rerr))
	}
	l.Revision = rev
	l.Expires = start.Add(s.cfg.TTL - s.cfg.Margin)
	return l, nil
}

// Release gives l up at once: a compare-and-set on l.Revision that
// replaces the entry by a tombstone, so the next Acquire succeeds without
// waiting for the TTL. It returns a *LostError (and changes nothing) when
// l is no longer the latest write.
func (s *Store) Release(ctx context.Context, l Lease) error {
	if err := l.check(); err != nil {
		return err
	}
	_, err := s.write(ctx, write{name: l.Name, expected: l.Revision, purge: true, ttl: s.cfg.MarkerTTL})
	var ce *casError
	switch {
	case errors.As(err, &ce):
		return s.lost(l, Superseded, ce.actual, nil)
	case err != nil:
		return fmt.Errorf("lease: release %q epoch %d: %w", l.Name, l.Epoch, err)
	}
	s.log.Debug("lease released", "lease", l.Name, "node", l.Holder, "epoch", l.Epoch)
	return nil
}

// releaseOwn is Release for a holder whose last renewal may have landed
// unconfirmed (it was cancelled): when the compare-and-set fails, and the
// bucket's latest revision is still this holder's record under this
// epoch, that revision is released. Nobody else writes a record with this
// holder and epoch, and the compare-and-set still guards against any
// write after it.
func (s *Store) releaseOwn(ctx context.Context, l Lease) error {
	if err := l.check(); err != nil {
		return err
	}
	_, err := s.write(ctx, write{name: l.Name, expected: l.Revision, purge: true, ttl: s.cfg.MarkerTTL})
	var ce *casError
	if !errors.As(err, &ce) {
		if err != nil {
			return fmt.Errorf("lease: release %q epoch %d: %w", l.Name, l.Epoch, err)
		}
		s.log.Debug("lease released", "lease", l.Name, "node", l.Holder, "epoch", l.Epoch)
		return nil
	}
	// Not "lost" yet (Release would log it so): look whose the latest
	// revision is first.
	e, rerr := s.readRetry(ctx, l.Name)
	if rerr != nil || !e.live || e.holder != l.Holder || e.epoch != l.Epoch || e.rev <= l.Revision {
		return s.lost(l, Superseded, ce.actual, rerr)
	}
	l.Revision = e.rev
	return s.Release(ctx, l)
}

// Peek reads what the bucket holds for name, from the bucket's leader. It
// is for display and for choosing when to try Acquire again. It may be
// stale (a leader that has just lost its leadership still answers), so
// never decide ownership from it: only Acquire, Renew and Release decide.
func (s *Store) Peek(ctx context.Context, name string) (Entry, error) {
	if err := checkName(name); err != nil {
		return Entry{}, err
	}
	e, err := s.readRetry(ctx, name)
	if err != nil {
		return Entry{}, fmt.Errorf("lease: peek %q: %w", name, err)
	}
	out := Entry{Name: name, Revision: e.rev, Written: e.written}
	if e.live {
		out.Holder, out.Epoch, out.TTL = e.holder, e.epoch, e.ttl
	}
	return out, nil
}

func (s *Store) lost(l Lease, why LostReason, rev uint64, err error) *LostError {
	s.log.Info("lease lost", "lease", l.Name, "node", l.Holder, "epoch", l.Epoch, "reason", why.String(), "err", err)
	return &LostError{Name: l.Name, Holder: l.Holder, Epoch: l.Epoch, Reason: why, Revision: rev, Err: err}
}

// sleep waits d or until ctx ends. Used for back-off between attempts,
// never to wait for a condition.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff doubles from lo per attempt (1-based) up to hi.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}
