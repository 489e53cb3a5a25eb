package lease

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"
	"unicode/utf8"
)

// Defaults for Config. Why these values: docs/adr/0013-leases.md.
const (
	// DefaultBucket is the KV bucket that holds the leases.
	DefaultBucket = "troupe-leases"

	// DefaultTTL is how long a lease lives without a renewal. It must
	// outlast JetStream's Raft election after a crash of the bucket's
	// leader (4-9 s in nats-server; 2-4 s as Troupe runs it, ADR 0018): with DefaultRenewEvery,
	// DefaultRequestTimeout and DefaultMargin, a holder whose last renewal
	// went through just before the crash still renews before its deadline
	// when writes resume within 15 - 3 - 1 - 1 = 10 s. It is also the
	// failover time when membership does not report the holder dead.
	DefaultTTL = 15 * time.Second

	// DefaultMargin is subtracted from every deadline the holder computes:
	// it covers clock skew between the NATS servers (the server that
	// expires an entry may not be the one that stamped it), pauses of the
	// holder's process, and the server's timer granularity.
	DefaultMargin = time.Second

	// DefaultRequestTimeout bounds one request to the bucket (R3 writes
	// take 0.2-2 ms here; a request that times out is resent with the same
	// message id, which the server deduplicates).
	DefaultRequestTimeout = time.Second

	// DefaultAttempts bounds the requests one operation makes when the
	// bucket does not answer.
	DefaultAttempts = 3

	// DefaultMarkerTTL is how long a released or expired lease leaves its
	// tombstone in the bucket (the bucket's LimitMarkerTTL), for watchers.
	DefaultMarkerTTL = time.Minute

	// maxNameLen bounds a lease name (a KV key, a NATS subject token).
	maxNameLen = 256
	// maxHolderLen bounds a holder id.
	maxHolderLen = 256
)

// Config configures a Store. The zero value takes every default.
type Config struct {
	// Bucket is the KV bucket, created when missing ([A-Za-z0-9_-]).
	// Default: DefaultBucket.
	Bucket string

	// Replicas is the bucket's replica count when Open creates it (an
	// existing bucket keeps its own). Default: 3 when the connection's
	// server is part of a cluster, else 1. A cluster of two servers must
	// set 2 (or 1): JetStream refuses more replicas than servers.
	Replicas int

	// TTL is how long a lease lives at the server without a renewal:
	// whole seconds, at least 1 s (the server's Nats-TTL resolution).
	// Default: DefaultTTL.
	TTL time.Duration

	// RenewEvery is how often a Keeper renews. Default: TTL/5. At least
	// two renewals must fit before the deadline: 2*RenewEvery <= TTL -
	// Margin.
	RenewEvery time.Duration

	// Margin is how much earlier than the server's expiry a holder stops
	// treating itself as owner (Lease.Expires = start of the write that
	// granted or renewed it + TTL - Margin). Default: DefaultMargin.
	Margin time.Duration

	// RequestTimeout bounds one request to the bucket. Default:
	// DefaultRequestTimeout.
	RequestTimeout time.Duration

	// Attempts bounds the requests of one operation when the bucket does
	// not answer or answers "write in flight". Default: DefaultAttempts.
	Attempts int

	// MarkerTTL is how long tombstones (released or expired leases) stay:
	// whole seconds, at least 1 s. Used as the bucket's LimitMarkerTTL when
	// Open creates it. Default: DefaultMarkerTTL.
	MarkerTTL time.Duration

	// Logger receives renewals (debug), retries (warn) and losses (info)
	// with component=lease. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.RenewEvery == 0 {
		c.RenewEvery = c.TTL / 5
	}
	if c.Margin == 0 {
		c.Margin = DefaultMargin
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Attempts == 0 {
		c.Attempts = DefaultAttempts
	}
	if c.MarkerTTL == 0 {
		c.MarkerTTL = DefaultMarkerTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

var bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Validate reports the first invalid field of a Config with its defaults
// applied.
func (c Config) Validate() error {
	var errs []error
	if !bucketRe.MatchString(c.Bucket) {
		errs = append(errs, fmt.Errorf("bucket %q: want letters, digits, '-' and '_'", c.Bucket))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("replicas %d: want 1-5 (0 for the default)", c.Replicas))
	}
	if c.TTL < time.Second || c.TTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("ttl %s: want whole seconds, at least 1s (the server's Nats-TTL resolution)", c.TTL))
	}
	if c.MarkerTTL < time.Second || c.MarkerTTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("marker ttl %s: want whole seconds, at least 1s", c.MarkerTTL))
	}
	if c.Margin <= 0 || c.Margin >= c.TTL {
		errs = append(errs, fmt.Errorf("margin %s: want more than 0 and less than the ttl %s", c.Margin, c.TTL))
	}
	if c.RenewEvery <= 0 || 2*c.RenewEvery > c.TTL-c.Margin {
		errs = append(errs, fmt.Errorf("renew every %s: want more than 0 and two renewals within ttl - margin (%s)", c.RenewEvery, c.TTL-c.Margin))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("request timeout %s: want more than 0", c.RequestTimeout))
	}
	if c.Attempts < 1 {
		errs = append(errs, fmt.Errorf("attempts %d: want at least 1", c.Attempts))
	}
	if len(errs) > 0 {
		return fmt.Errorf("lease: config: %w", errors.Join(errs...))
	}
	return nil
}

// keyRe is the KV key alphabet of nats.go (jetstream.validKeyRe).
var keyRe = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

// checkName reports why name cannot be a lease name (a KV key).
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: %d bytes, over %d", ErrInvalidName, len(name), maxNameLen)
	case !keyRe.MatchString(name):
		return fmt.Errorf("%w: %q: want letters, digits and - / _ = . only", ErrInvalidName, name)
	case name[0] == '.' || name[len(name)-1] == '.':
		return fmt.Errorf("%w: %q: must not start or end with '.'", ErrInvalidName, name)
	}
	for i := 1; i < len(name); i++ {
		if name[i] == '.' && name[i-1] == '.' {
			return fmt.Errorf("%w: %q: empty token between dots", ErrInvalidName, name)
		}
	}
	return nil
}

func checkHolder(holder string) error {
	switch {
	case holder == "":
		return fmt.Errorf("%w: empty holder", ErrInvalidName)
	case len(holder) > maxHolderLen:
		return fmt.Errorf("%w: holder of %d bytes, over %d", ErrInvalidName, len(holder), maxHolderLen)
	case !utf8.ValidString(holder):
		return fmt.Errorf("%w: holder %q is not valid UTF-8", ErrInvalidName, holder)
	}
	return nil
}
