package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/troupe-dev/troupe/plugins/internal/fuel"
)

// Every call into a guest is bounded, trusted or not: the module is rewritten
// at load (package plugins/internal/fuel) so that its loops and function
// entries spend fuel held in a wasm global, and a refuel host function runs
// once per fuelChunk units. Refuel is the watchdog: it ends the call when the
// call's wall-clock deadline has passed, its context is done, or its fuel
// (limits.fuel) is spent. Host functions that wait (http_call, the clock
// capability's sleep) wait no longer than the deadline. See
// docs/adr/0009-bounded-plugin-calls.md.

// fuelChunk is the fuel handed out per refuel: about 0.1 ms of the tightest
// loop (0.4-0.5 ns per unit here). Between two refuels a call never leaves
// wasm, and Go's garbage collector cannot stop a goroutine that is inside
// wasm, so the chunk bounds how long a collection (and with it the whole
// node) can wait for a plugin call.
const fuelChunk = 1 << 18

// BoundError is the failure of a call (or of a load-time instantiation or
// probe) that hit one of its bounds. It wraps ErrTimeout, or the context's
// error when the caller gave up first.
type BoundError struct {
	// What hit the bound: "call", "load" (instantiation, _initialize, the
	// probe).
	What string
	// Reason is "deadline", "fuel" or "canceled".
	Reason string
	// Limit is the deadline's duration, or the fuel limit.
	Limit time.Duration
	Fuel  int64
	// Ran is how long the call ran.
	Ran time.Duration
	ctx error
}

func (e *BoundError) Error() string {
	switch e.Reason {
	case "fuel":
		return fmt.Sprintf("plugins: deadline exceeded: %s spent its fuel (%d units, limits.fuel) in %v", e.What, e.Fuel, e.Ran.Round(time.Microsecond))
	case "canceled":
		return fmt.Sprintf("plugins: %s interrupted after %v: %v", e.What, e.Ran.Round(time.Microsecond), e.ctx)
	}
	return fmt.Sprintf("plugins: deadline exceeded: %s ran %v, limit %v", e.What, e.Ran.Round(time.Microsecond), e.Limit)
}

func (e *BoundError) Unwrap() error {
	if e.ctx != nil {
		return e.ctx
	}
	return ErrTimeout
}

// meter bounds the calls of one instance (one call at a time).
type meter struct {
	what     string
	start    time.Time
	deadline time.Time
	limit    time.Duration
	fuel     int64 // the call's fuel limit
	left     int64 // fuel not handed out yet
	chunk    int64 // fuel per refuel (fuelChunk)
}

// begin starts a bounded call and returns the first chunk of fuel.
func (m *meter) begin(what string, start time.Time, limit time.Duration, fuel int64) uint64 {
	m.what, m.start, m.limit, m.fuel = what, start, limit, fuel
	m.deadline = start.Add(limit)
	grant := min(m.chunk, fuel)
	m.left = fuel - grant
	return uint64(grant)
}

// refuel hands out the next chunk, or panics with a *BoundError, which
// aborts the call.
func (m *meter) refuel(ctx context.Context) uint64 {
	now := time.Now()
	switch {
	case ctx.Err() != nil:
		panic(&BoundError{What: m.what, Reason: "canceled", Ran: now.Sub(m.start), ctx: ctx.Err()})
	case now.After(m.deadline):
		panic(&BoundError{What: m.what, Reason: "deadline", Limit: m.limit, Ran: now.Sub(m.start)})
	case m.left <= 0:
		panic(&BoundError{What: m.what, Reason: "fuel", Fuel: m.fuel, Ran: now.Sub(m.start)})
	}
	grant := min(m.chunk, m.left)
	m.left -= grant
	return uint64(grant)
}

// checkDeadline panics with a *BoundError when the call's deadline has
// passed: host functions call it after they waited.
func (m *meter) checkDeadline() {
	if now := time.Now(); now.After(m.deadline) {
		panic(&BoundError{What: m.what, Reason: "deadline", Limit: m.limit, Ran: now.Sub(m.start)})
	}
}

// sleep is the clock capability's nanosleep: it sleeps no longer than the
// call may still run, and ends the call when the deadline comes first.
func (m *meter) sleep(ns int64) {
	if ns <= 0 {
		return
	}
	d := time.Duration(ns)
	if rest := time.Until(m.deadline); d > rest {
		if rest > 0 {
			time.Sleep(rest)
		}
		m.checkDeadline()
		panic(&BoundError{What: m.what, Reason: "deadline", Limit: m.limit, Ran: time.Since(m.start)})
	}
	time.Sleep(d)
}

// meterKey carries the meter of an instance being instantiated, whose
// _initialize runs before the host knows its api.Module.
type meterKey struct{}

// hostRefuel is the fuel.ImportModule.ImportName import.
func (v *version) hostRefuel(ctx context.Context, mod api.Module, stack []uint64) {
	var m *meter
	if inst := v.instanceOf(mod); inst != nil {
		m = inst.meter
	} else if lm, ok := ctx.Value(meterKey{}).(*meter); ok {
		m = lm
	} else {
		violate("refuel: call outside a bounded call")
	}
	stack[0] = m.refuel(ctx)
}

func (v *version) instantiateMeter(ctx context.Context, rt wazero.Runtime) error {
	_, err := rt.NewHostModuleBuilder(fuel.ImportModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(v.hostRefuel), nil, []api.ValueType{i64}).
		Export(fuel.ImportName).Instantiate(ctx)
	return err
}

// loadBound is the wall-clock bound of instantiating (with _initialize) and
// of the load-time self-check: ten calls' worth, at least 2 s, at most 10 s.
func (m *Manifest) loadBound() time.Duration {
	return min(max(10*m.Limits.Timeout, 2*time.Second), 10*time.Second)
}

// meterMode says how calls are bounded. Only tests change it, to measure
// the bound against the unbounded call it replaced.
type meterMode int

const (
	meterFuel        meterMode = iota // fuel and deadlines (the only production mode)
	meterNone                         // unbounded (before issue 15, trusted plugins)
	meterCloseOnDone                  // wazero's WithCloseOnContextDone (before issue 15, untrusted)
)

// meteredCache keeps instrumented modules in memory (by hash of the input)
// and, with a CacheDir, on disk beside wazero's compilation cache, so that
// a reload or a restart does not rewrite a 2 MB Go guest again.
type meteredCache struct {
	dir string // "" = memory only
	mu  sync.Mutex
	mem map[string][]byte
}

// maxMeteredInMemory bounds the in-memory cache; it is emptied when full
// (loads are rare; the disk cache keeps the rest).
const maxMeteredInMemory = 64

func newMeteredCache(cacheDir string) *meteredCache {
	c := &meteredCache{mem: make(map[string][]byte)}
	if cacheDir != "" {
		c.dir = filepath.Join(cacheDir, "fuel-v"+strconv.Itoa(fuel.Version))
	}
	return c
}

// instrument returns the metered module of wasm.
func (c *meteredCache) instrument(wasm []byte) ([]byte, error) {
	sum := sha256.Sum256(wasm)
	key := hex.EncodeToString(sum[:])
	c.mu.Lock()
	out, ok := c.mem[key]
	c.mu.Unlock()
	if ok {
		return out, nil
	}
	if c.dir != "" {
		if b, err := os.ReadFile(filepath.Join(c.dir, key+".wasm")); err == nil {
			c.put(key, b)
			return b, nil
		}
	}
	out, err := fuel.Instrument(wasm)
	if err != nil {
		return nil, err
	}
	c.put(key, out)
	if c.dir != "" {
		// Best effort: a failure only costs the rewrite next time.
		if err := os.MkdirAll(c.dir, 0o755); err == nil {
			tmp := filepath.Join(c.dir, "."+key+".tmp")
			if err := os.WriteFile(tmp, out, 0o644); err == nil {
				_ = os.Rename(tmp, filepath.Join(c.dir, key+".wasm"))
			}
		}
	}
	return out, nil
}

func (c *meteredCache) put(key string, b []byte) {
	c.mu.Lock()
	if len(c.mem) >= maxMeteredInMemory {
		clear(c.mem)
	}
	c.mem[key] = b
	c.mu.Unlock()
}

// errMeter marks a module the fuel rewriter refused.
var errMeter = errors.New("fuel metering")
