package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero"
)

// State is a plugin's load state.
type State int

const (
	// StateLoading: the plugin's first load is in progress; nothing
	// serves yet.
	StateLoading State = iota
	// StateReady: the newest files are loaded and serving.
	StateReady
	// StateStale: an older version is serving because the newest files
	// failed to load; Info.LastError says why.
	StateStale
	// StateFailed: no version is serving; Info.LastError says why.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateLoading:
		return "loading"
	case StateReady:
		return "ready"
	case StateStale:
		return "stale"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Info describes one plugin for `troupe plugins list`.
type Info struct {
	Name    string
	Version string // hash of the serving version's files ("" when none serves)
	Kind    Kind
	Hooks   string // e.g. "commands=account/Deposit,Withdraw"
	Order   int
	Trusted bool
	State   State
	// LastError is the newest load error or call failure ("" when none).
	LastError string
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time
	// LoadedAt is when the serving version was loaded.
	LoadedAt time.Time
}

// Decision is the outcome of a sidecar chain.
type Decision struct {
	// Rejected is true when a plugin rejected the message (by its verdict
	// or by its failure policy); the message must not be delivered.
	Rejected bool
	// Reason says why, for the sender.
	Reason string
	// Plugin is the plugin that rejected.
	Plugin string
	// Err is the plugin's failure when the rejection came from the
	// failure policy rather than a verdict (a *CallError).
	Err error
	// Code is the error code the plugin asked the client to see for its
	// rejection (the verdict's metadata MetaCode): one of
	// RejectCodes; "" means failed_precondition, the default for a
	// rejection.
	Code string
	// RetryAfter is the plugin's hint of when the same command may
	// succeed (the verdict's metadata MetaRetryAfterMS); 0 when none.
	RetryAfter time.Duration
}

// Verdict metadata keys a rejecting plugin may set to shape the error its
// rejection becomes (see docs/errors.md). They are read only on a
// rejection and never reach the message's metadata.
const (
	// MetaCode names the error code of a rejection, one of RejectCodes:
	// "resource_exhausted" for a rate limit, "invalid_argument" for a
	// malformed payload, "permission_denied" for a refused caller.
	MetaCode = "troupe-code"
	// MetaRetryAfterMS is a retry hint in milliseconds (a decimal
	// integer), shown to the client (HTTP Retry-After, NATS header).
	MetaRetryAfterMS = "troupe-retry-after-ms"
)

// RejectCodes are the codes a plugin's rejection may carry (MetaCode);
// any other value is failed_precondition.
var RejectCodes = []string{"failed_precondition", "invalid_argument", "permission_denied", "resource_exhausted", "unavailable"}

// Host loads plugins from a directory and runs them. All methods are safe for
// concurrent use. Command, Event, Topic and Call run guest code on the
// calling goroutine.
type Host struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	cache   wazero.CompilationCache
	// compiling holds a mutex per module content (sha256 of the bytes
	// compiled): see compile.
	compiling sync.Map
	metered   *meteredCache
	budget    *budget
	mode      meterMode // meterFuel except in benchmarks
	chunk     int64     // fuel per refuel: fuelChunk except in benchmarks

	transport *http.Transport // for http_call

	chain atomic.Pointer[chain]

	loadMu sync.Mutex // serializes Reload; taken before mu

	mu      sync.Mutex // guards entries, started
	entries map[string]*entry
	started bool

	closed    atomic.Bool
	closeOnce sync.Once
	stop      chan struct{}
	wg        sync.WaitGroup
}

// entry is the host's record of one plugin name.
type entry struct {
	name      string
	cur       *version // serving version, nil when none
	man       *Manifest
	filesHash string // hash of the files last tried, to skip unchanged ones
	state     State
	lastErr   string
	lastErrAt time.Time
	// loadErr is why the files named by filesHash failed to load ("" if
	// they loaded).
	loadErr  string
	loadedAt time.Time
}

// chain is an immutable snapshot of the serving versions, swapped
// atomically on every (re)load so that calls never take a host lock.
type chain struct {
	sidecars    []*version // sorted by (order, name)
	byName      map[string]*version
	ambassadors map[string]*version
}

var emptyChain = &chain{}

// New creates a host. It loads nothing until Start.
func New(cfg Config) (*Host, error) {
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("plugins: metrics: %w", err)
	}
	h := &Host{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: m,
		entries: make(map[string]*entry),
		stop:    make(chan struct{}),

		transport: newTransport(),
		metered:   newMeteredCache(cfg.CacheDir),
		budget:    &budget{limit: cfg.MemoryBudget},
		chunk:     fuelChunk,
	}
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("plugins: compilation cache %s: %w", cfg.CacheDir, err)
		}
		h.cache = c
	} else {
		h.cache = wazero.NewCompilationCache()
	}
	h.chain.Store(emptyChain)
	return h, nil
}

// Start loads every plugin in Dir and, unless Config.NoWatch, starts
// watching it. It returns once the initial load is done. A plugin that fails to load
// is reported by List and logged; it never fails Start.
func (h *Host) Start(ctx context.Context) error {
	if h.closed.Load() {
		return ErrClosed
	}
	h.mu.Lock()
	if h.started {
		h.mu.Unlock()
		return errors.New("plugins: already started")
	}
	h.started = true
	h.mu.Unlock()
	if h.cfg.Dir == "" {
		return nil
	}
	_ = h.Reload(ctx) // failures are per plugin, in List
	if !h.cfg.NoWatch {
		if err := h.startWatcher(); err != nil {
			h.log.Warn("plugin directory not watched; use Reload", slog.String("dir", h.cfg.Dir), slog.Any("err", err))
		}
	}
	return nil
}

// Close stops the watcher and unloads every plugin. Calls in flight finish;
// later calls return ErrClosed. Close is idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.closed.Store(true)
		close(h.stop)
		h.wg.Wait()
		h.loadMu.Lock()
		defer h.loadMu.Unlock()
		h.mu.Lock()
		for _, e := range h.entries {
			if e.cur != nil {
				e.cur.retire()
			}
		}
		h.entries = map[string]*entry{}
		h.mu.Unlock()
		h.chain.Store(emptyChain)
		_ = h.cache.Close(context.Background())
		h.transport.CloseIdleConnections()
	})
	return nil
}

// List describes every plugin found in Dir, sorted by chain order then name.
func (h *Host) List() []Info {
	h.mu.Lock()
	out := make([]Info, 0, len(h.entries))
	for _, e := range h.entries {
		in := Info{Name: e.name, State: e.state, LastError: e.lastErr, LastErrorAt: e.lastErrAt, LoadedAt: e.loadedAt}
		man := e.man
		if e.cur != nil {
			man = e.cur.man
			in.Version = e.cur.hash
		}
		if man != nil {
			in.Kind, in.Hooks, in.Order, in.Trusted = man.Kind, man.Hooks.String(), man.Order, man.Trusted
		}
		out = append(out, in)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Order != out[j].Order {
			return out[i].Order < out[j].Order
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// maxWasmSize bounds a plugin file.
const maxWasmSize = 64 << 20

// Reload rescans Dir: new and changed plugins are compiled and self-checked,
// then swapped in atomically (calls in flight finish on the old version);
// a plugin whose new files fail keeps its old version serving; a plugin
// whose .wasm is gone is unloaded. The returned error joins the load
// failures, which List also reports.
func (h *Host) Reload(ctx context.Context) error {
	if h.closed.Load() {
		return ErrClosed
	}
	h.loadMu.Lock()
	defer h.loadMu.Unlock()
	if h.closed.Load() {
		return ErrClosed
	}
	if h.cfg.Dir == "" {
		return nil
	}
	names, err := scanDir(h.cfg.Dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			names = nil // unload everything; not an error
		} else {
			return fmt.Errorf("plugins: scan %s: %w", h.cfg.Dir, err)
		}
	}
	// Compiling is CPU-bound (half a second for a Go guest without a warm
	// cache): load plugins in parallel, one per CPU.
	errs := make([]error, len(names))
	seen := make(map[string]bool, len(names))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, name := range names {
		seen[name] = true
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = h.loadOne(ctx, name)
		}()
	}
	wg.Wait()
	h.mu.Lock()
	var gone []*entry
	for name, e := range h.entries {
		if !seen[name] {
			gone = append(gone, e)
			delete(h.entries, name)
		}
	}
	h.publishLocked()
	h.mu.Unlock()
	for _, e := range gone {
		if e.cur != nil {
			e.cur.retire()
		}
		h.metrics.forget(e.name)
		h.log.Info("plugin unloaded", slog.String("plugin", e.name))
	}
	return errors.Join(errs...)
}

// scanDir returns the names of the NAME.wasm files in dir.
func scanDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range ents {
		n := de.Name()
		if de.IsDir() || !strings.HasSuffix(n, ".wasm") || strings.HasPrefix(n, ".") {
			continue
		}
		names = append(names, strings.TrimSuffix(n, ".wasm"))
	}
	sort.Strings(names)
	return names, nil
}

// loadOne (re)loads plugin name if its files changed since the last try.
// Called with loadMu held, concurrently for different names.
func (h *Host) loadOne(ctx context.Context, name string) error {
	wasmPath := filepath.Join(h.cfg.Dir, name+".wasm")
	manPath := filepath.Join(h.cfg.Dir, name+".toml")
	wasm, werr := readFileMax(wasmPath, maxWasmSize)
	manBytes, merr := readFileMax(manPath, maxManifestSize)
	sum := sha256.New()
	sum.Write(wasm)
	sum.Write([]byte{0})
	sum.Write(manBytes)
	filesHash := hex.EncodeToString(sum.Sum(nil))[:12]

	h.mu.Lock()
	e := h.entries[name]
	if e == nil {
		e = &entry{name: name}
		h.entries[name] = e
	}
	unchanged := e.filesHash == filesHash && werr == nil && merr == nil
	loadErr := e.loadErr
	h.mu.Unlock()
	if unchanged {
		if loadErr != "" {
			// These files failed before (perhaps when the watcher saw
			// them): still a failure, whoever asks.
			return errors.New(loadErr)
		}
		return nil
	}

	start := time.Now()
	// Say what the node is doing: a Go guest's first compile takes about
	// half a second (several on a busy machine); later starts read the
	// compilation cache.
	h.log.Info("loading plugin (compiling it unless the cache has it)", slog.String("plugin", name), slog.String("cache", h.cfg.CacheDir))
	v, man, err := h.build(ctx, name, wasm, werr, manBytes, merr, filesHash)
	h.mu.Lock()
	e.filesHash = filesHash
	if man != nil && e.cur == nil {
		e.man = man
	}
	var old *version
	if err != nil {
		e.lastErr, e.lastErrAt, e.loadErr = err.Error(), time.Now(), err.Error()
		if e.cur != nil {
			e.state = StateStale
		} else {
			e.state = StateFailed
		}
	} else {
		old = e.cur
		e.cur, e.man, e.state, e.loadedAt = v, man, StateReady, time.Now()
		e.lastErr, e.lastErrAt, e.loadErr = "", time.Time{}, ""
		h.publishLocked()
	}
	serving := e.cur != nil
	h.mu.Unlock()

	if old != nil {
		old.retire() // after the swap: new calls already go to v
	}
	if serving {
		h.metrics.up.WithLabelValues(name).Set(1)
	} else {
		h.metrics.up.WithLabelValues(name).Set(0)
	}
	if err != nil {
		h.metrics.loads.WithLabelValues(name, "error").Inc()
		attrs := []any{slog.String("plugin", name), slog.String("files", filesHash), slog.Any("err", err)}
		if serving {
			h.log.Warn("plugin reload failed; previous version keeps serving", attrs...)
		} else {
			h.log.Error("plugin failed to load", attrs...)
		}
		return err
	}
	h.metrics.loads.WithLabelValues(name, "ok").Inc()
	h.log.Info("plugin loaded", slog.String("plugin", name), slog.String("version", v.hash),
		slog.String("kind", man.Kind.String()), slog.String("hooks", man.Hooks.String()),
		slog.Bool("trusted", man.Trusted), slog.Duration("took", time.Since(start)))
	return nil
}

func (h *Host) build(ctx context.Context, name string, wasm []byte, werr error, manBytes []byte, merr error, hash string) (*version, *Manifest, error) {
	fail := func(err error) (*version, *Manifest, error) {
		return nil, nil, &LoadError{Plugin: name, Err: err}
	}
	if werr != nil {
		return fail(werr)
	}
	if merr != nil {
		if errors.Is(merr, fs.ErrNotExist) {
			return fail(fmt.Errorf("no manifest %s.toml beside %s.wasm", name, name))
		}
		return fail(merr)
	}
	man, err := ParseManifest(manBytes)
	if err != nil {
		return fail(err)
	}
	if man.Name != name {
		return nil, nil, &LoadError{Plugin: name, Err: fmt.Errorf("manifest name %q does not match file name %q", man.Name, name)}
	}
	v, err := h.compile(ctx, man, wasm, hash)
	if errors.Is(err, errRuntimePanic) {
		v, err = h.compile(ctx, man, wasm, hash) // once more, on a fresh runtime
	}
	if err != nil {
		return nil, man, &LoadError{Plugin: name, Err: err}
	}
	return v, man, nil
}

// errRuntimePanic marks a load that failed because the Wasm runtime
// panicked (compile recovers it).
var errRuntimePanic = errors.New("the Wasm runtime panicked")

// compileHook, when set (by tests only), runs in compile right before the
// module is compiled: a test makes it panic as the runtime once did.
var compileHook func(plugin string)

// publishLocked rebuilds the chain snapshot from the entries. h.mu held.
func (h *Host) publishLocked() {
	c := &chain{byName: make(map[string]*version), ambassadors: make(map[string]*version)}
	for _, e := range h.entries {
		v := e.cur
		if v == nil {
			continue
		}
		c.byName[v.name] = v
		switch v.man.Kind {
		case KindSidecar:
			c.sidecars = append(c.sidecars, v)
		case KindAmbassador:
			c.ambassadors[v.name] = v
		}
	}
	sort.Slice(c.sidecars, func(i, j int) bool {
		a, b := c.sidecars[i], c.sidecars[j]
		if a.man.Order != b.man.Order {
			return a.man.Order < b.man.Order
		}
		return a.name < b.name
	})
	h.chain.Store(c)
}

// noteFailure records a call failure on the plugin's entry for List.
func (h *Host) noteFailure(name string, err error) {
	h.mu.Lock()
	if e := h.entries[name]; e != nil {
		e.lastErr, e.lastErrAt = err.Error(), time.Now()
	}
	h.mu.Unlock()
}

// readFileMax reads a regular file of at most limit bytes. Anything else
// dropped into the plugin directory (a named pipe, a device, a socket, a
// directory, or a symlink to one of them) is refused without blocking:
// the file is opened non-blocking (opening a FIFO with no writer would wait
// forever) and checked with fstat, on the descriptor, so that a file
// swapped between a check and the open cannot get through. A symlink to a
// regular file is read like the file.
func readFileMax(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", filepath.Base(path), limit)
	}
	return b, nil
}

// readFileLimited reads a secret file (at most 64 KiB).
func readFileLimited(path string) ([]byte, error) { return readFileMax(path, 64<<10) }
