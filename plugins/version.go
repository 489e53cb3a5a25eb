package plugins

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/plugins/internal/fuel"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

// version is one loaded build of a plugin: its own wazero runtime (the
// memory limit is per runtime), the compiled module, and a pool of
// instances. A reload creates a new version and retires the old one, which
// closes once its last in-flight call returns.
type version struct {
	host    *Host
	name    string
	hash    string
	man     *Manifest
	secrets map[string]string
	egress  []egressRule
	log     *slog.Logger

	rt       wazero.Runtime
	compiled wazero.CompiledModule
	modCfg   wazero.ModuleConfig
	metered  bool  // calls are bounded by fuel and deadlines (see meter.go)
	reserve  int64 // bytes of the memory budget each instance reserves
	// wake is signalled when an instance returns to the pool, for callers
	// waiting because the memory budget stopped the pool from growing.
	wake      chan struct{}
	budgetLog atomic.Bool // the pool stopped growing once: logged

	hooks   [hookCount]hookMetrics
	latency prometheus.Observer

	// sem bounds live instances: a slot is taken for as long as an
	// instance is in use.
	sem chan struct{}

	mu      sync.Mutex // guards free, retired, live
	free    []*instance
	live    int // instances created and not yet closed
	retired bool

	seq      atomic.Uint64
	byModule sync.Map // api.Module -> *instance, for imports that keep per-instance state

	gmu      sync.Mutex // guards the guest metric maps
	gCounter map[string]prometheus.Counter
	gGauge   map[string]prometheus.Gauge
}

// hookCount sizes per-hook arrays (indexed by troupev1.Hook).
const hookCount = int(troupev1.Hook_HOOK_PROBE) + 1

// instance is one instantiated guest module with cached function handles
// and buffers; it is used by one call at a time.
type instance struct {
	v       *version
	mod     api.Module
	mem     api.Memory
	handle  api.Function
	alloc   api.Function
	dealloc api.Function
	stack   [2]uint64

	inPtr, inCap uint32 // guest buffer owned by the host, reused across calls

	buf     []byte // host-side encoding buffer
	req     troupev1.PluginRequest
	pctx    troupev1.PluginContext
	wCmd    troupev1.PluginRequest_Command
	wEvent  troupev1.PluginRequest_Event
	wTopic  troupev1.PluginRequest_Topic
	wCall   troupev1.PluginRequest_Call
	verdict troupev1.Verdict

	pending []byte // encoded HttpResponse waiting for http_result
	stderr  *guestStderr

	meter *meter            // bounds the current call
	fuel  api.MutableGlobal // the guest's fuel counter (nil when not metered)
}

// errRetired is returned by acquire on a version that a reload replaced.
var errRetired = errors.New("plugins: version retired")

// compile builds a version from a manifest and wasm bytes, and checks it:
// exports and their signatures, abi_version, and a probe call.
func (h *Host) compile(ctx context.Context, man *Manifest, wasm []byte, hash string) (v *version, err error) {
	secrets, err := man.resolveSecrets(readFileLimited, h.cfg.Getenv)
	if err != nil {
		return nil, err
	}
	if err := h.budget.checkPool(man); err != nil {
		return nil, err
	}
	v = &version{
		host:    h,
		name:    man.Name,
		hash:    hash,
		man:     man,
		secrets: secrets,
		log:     h.log.With(slog.String("plugin", man.Name), slog.String("version", hash)),
		sem:     make(chan struct{}, man.Limits.MaxInstances),
		wake:    make(chan struct{}, 1),
		latency: h.metrics.latency.WithLabelValues(man.Name),
		metered: h.mode == meterFuel,
		reserve: int64(man.Limits.MemoryPages) * pageSize,
	}
	for _, e := range man.Capabilities.Egress {
		r, _ := parseEgressRule(e) // validated with the manifest
		v.egress = append(v.egress, r)
	}
	for i := range v.hooks {
		hk := hookName(troupev1.Hook(i))
		v.hooks[i] = hookMetrics{
			calls:   h.metrics.calls.WithLabelValues(man.Name, hk),
			rejects: h.metrics.rejects.WithLabelValues(man.Name, hk),
		}
	}

	code := wasm
	if v.metered {
		if code, err = h.metered.instrument(wasm); err != nil {
			return nil, fmt.Errorf("compile: invalid or unsupported module: %w", err)
		}
	}
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(man.Limits.MemoryPages).
		WithCloseOnContextDone(h.mode == meterCloseOnDone && !man.Trusted)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	v.rt = rt
	defer func() {
		if p := recover(); p != nil {
			// A panic inside the Wasm runtime while compiling or
			// instantiating (seen once, in a race-detector run: an index
			// out of range in wazero's ExportedFunction) must not take
			// the node down: the load fails, and is tried once more.
			h.log.Error("the Wasm runtime panicked while loading a plugin", "plugin", man.Name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			v, err = nil, fmt.Errorf("%w: %v", errRuntimePanic, p)
		}
		if err != nil {
			_ = rt.Close(context.Background())
		}
	}()
	if err := v.instantiateImports(ctx, v.rt); err != nil {
		return nil, fmt.Errorf("host imports: %w", err)
	}
	if v.metered {
		if err := v.instantiateMeter(ctx, v.rt); err != nil {
			return nil, fmt.Errorf("host imports: %w", err)
		}
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, v.rt); err != nil {
		return nil, fmt.Errorf("wasi: %w", err)
	}
	if compileHook != nil {
		compileHook(man.Name)
	}
	// Identical module bytes never compile at once: wazero v1.12 hands a
	// module read from its compilation cache to a concurrent compilation
	// of the same bytes before it has finished preparing it (a data race
	// the race detector reports, and once an index out of range while
	// instantiating), as when two plugins are built from one .wasm.
	lock, _ := h.compiling.LoadOrStore(sha256.Sum256(code), &sync.Mutex{})
	lock.(*sync.Mutex).Lock()
	v.compiled, err = v.rt.CompileModule(ctx, code)
	lock.(*sync.Mutex).Unlock()
	if err != nil {
		if v.metered {
			// Report the author's module, not the metered copy (whose
			// function indices are one off): compile the original, which
			// passed the rewriter's checks, to find out what is wrong.
			if orig, oerr := v.rt.CompileModule(ctx, wasm); oerr != nil {
				err = oerr
			} else {
				_ = orig.Close(ctx)
				err = fmt.Errorf("fuel metering produced an invalid module (a bug, please report it): %w", err)
			}
		}
		return nil, fmt.Errorf("compile: %w", firstLineErr(err))
	}
	if err := checkExports(v.compiled); err != nil {
		return nil, err
	}

	mc := wazero.NewModuleConfig().
		WithStartFunctions(exportInitialize).
		WithStdout(io.Discard)
	if man.Capabilities.Clock {
		mc = mc.WithSysWalltime().WithSysNanotime().WithSysNanosleep()
	}
	if man.Capabilities.Random {
		mc = mc.WithRandSource(crand.Reader)
	}
	v.modCfg = mc

	// Self-check on a first instance, which then goes to the pool.
	cctx, cancel := v.loadContext(ctx)
	defer cancel()
	inst, err := v.instantiate(cctx, "its first instance")
	if err != nil {
		return nil, err
	}
	if err := v.selfCheck(cctx, inst); err != nil {
		inst.close()
		return nil, err
	}
	v.live = 1
	v.free = append(v.free, inst)
	return v, nil
}

// loadContext bounds instantiation and the self-check of untrusted plugins
// when they run under WithCloseOnContextDone (tests only); metered plugins
// bound them with their meter.
func (v *version) loadContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if v.host.mode != meterCloseOnDone || v.man.Trusted {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, v.man.loadBound())
}

func checkExports(cm wazero.CompiledModule) error {
	fns := cm.ExportedFunctions()
	for _, want := range exportSigs {
		def, ok := fns[want.name]
		if !ok {
			return fmt.Errorf("%w: missing export %q", ErrABI, want.name)
		}
		if !sameTypes(def.ParamTypes(), want.params) || !sameTypes(def.ResultTypes(), want.results) {
			return fmt.Errorf("%w: export %q has signature %s, want %s", ErrABI, want.name,
				sig(def.ParamTypes(), def.ResultTypes()), sig(want.params, want.results))
		}
	}
	if def, ok := fns[exportInitialize]; ok && (len(def.ParamTypes()) != 0 || len(def.ResultTypes()) != 0) {
		return fmt.Errorf("%w: export %q must take and return nothing", ErrABI, exportInitialize)
	}
	if _, ok := cm.ExportedMemories()[exportMemory]; !ok {
		return fmt.Errorf("%w: missing memory export %q", ErrABI, exportMemory)
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sig(params, results []api.ValueType) string {
	s := "("
	for i, p := range params {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(p)
	}
	s += ") -> ("
	for i, r := range results {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(r)
	}
	return s + ")"
}

// instantiate creates a new instance (running _initialize, bounded like a
// load) and caches its function handles. The instance reserves its memory
// limit from the node-wide budget first; what names it for the error.
func (v *version) instantiate(ctx context.Context, what string) (*instance, error) {
	if err := v.host.budget.reserve(v.name, v.reserve, what); err != nil {
		return nil, err
	}
	name := v.name + "#" + strconv.FormatUint(v.seq.Add(1), 10)
	stderr := &guestStderr{log: v.log.With(slog.String("instance", name))}
	m := &meter{chunk: v.host.chunk}
	cfg := v.modCfg.WithName(name).WithStderr(stderr)
	if v.metered {
		if v.man.Capabilities.Clock {
			cfg = cfg.WithNanosleep(m.sleep)
		}
		m.begin("load", time.Now(), v.man.loadBound(), loadFuel(v.man))
		m.left = loadFuel(v.man) // the global starts at 0: the first checkpoint refuels
		ctx = context.WithValue(ctx, meterKey{}, m)
	}
	mod, err := v.rt.InstantiateModule(ctx, v.compiled, cfg)
	if err != nil {
		stderr.flush()
		v.host.budget.release(v.reserve)
		return nil, fmt.Errorf("instantiate: %w", classify(err))
	}
	inst := &instance{
		v:       v,
		mod:     mod,
		stderr:  stderr,
		meter:   m,
		mem:     mod.Memory(),
		handle:  mod.ExportedFunction(exportHandle),
		alloc:   mod.ExportedFunction(exportAlloc),
		dealloc: mod.ExportedFunction(exportDealloc),
	}
	if v.metered {
		inst.fuel, _ = mod.ExportedGlobal(fuel.ExportGlobal).(api.MutableGlobal)
		if inst.fuel == nil {
			inst.close()
			return nil, fmt.Errorf("instantiate: the metered module exports no fuel counter")
		}
	}
	if inst.mem == nil {
		inst.close()
		return nil, fmt.Errorf("%w: module has no memory", ErrABI)
	}
	inst.req.AbiVersion = ABIVersion
	inst.pctx = troupev1.PluginContext{Node: v.host.cfg.Node, Plugin: v.name, PluginVersion: v.hash}
	inst.req.Context = &inst.pctx
	v.byModule.Store(mod, inst)
	return inst, nil
}

// loadFuel bounds the work of instantiation (with _initialize) and of the
// self-check: ten calls' worth.
func loadFuel(m *Manifest) int64 {
	if m.Limits.Fuel > MaxFuel/10 {
		return MaxFuel
	}
	return 10 * m.Limits.Fuel
}

// selfCheck verifies abi_version and answers a probe call, bounded like a
// load.
func (v *version) selfCheck(ctx context.Context, inst *instance) error {
	if v.metered {
		inst.fuel.Set(inst.meter.begin("load", time.Now(), v.man.loadBound(), loadFuel(v.man)))
	}
	fn := inst.mod.ExportedFunction(exportABIVersion)
	res, err := fn.Call(ctx)
	if err != nil {
		return fmt.Errorf("abi_version: %w", classify(err))
	}
	if got := api.DecodeI32(res[0]); got != ABIVersion {
		return fmt.Errorf("%w: abi_version returned %d, want %d", ErrABI, got, ABIVersion)
	}
	inst.req.Hook = troupev1.Hook_HOOK_PROBE
	inst.req.Message = nil
	vd, err := inst.call(ctx)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if vd.GetError() != "" {
		return fmt.Errorf("probe: %w: %s", ErrGuest, vd.GetError())
	}
	if vd.GetReject() {
		return fmt.Errorf("probe: %w: guest rejected the probe: %s", ErrABI, vd.GetReason())
	}
	return nil
}

// acquire takes an instance from the pool, creating one if none is free,
// waiting while MaxInstances are in use, or while the memory budget keeps
// the pool from growing and another instance is busy.
func (v *version) acquire(ctx context.Context) (*instance, error) {
	for {
		select {
		case v.sem <- struct{}{}:
		default:
			select {
			case v.sem <- struct{}{}:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		v.mu.Lock()
		if v.retired {
			v.mu.Unlock()
			<-v.sem
			return nil, errRetired
		}
		if n := len(v.free); n > 0 {
			inst := v.free[n-1]
			v.free = v.free[:n-1]
			more := n > 1
			v.mu.Unlock()
			if more {
				v.signal() // pass the wake-up on to the next waiter
			}
			return inst, nil
		}
		v.live++
		v.mu.Unlock()

		ictx, cancel := v.loadContext(ctx)
		inst, err := v.instantiate(ictx, "one more instance")
		cancel()
		if err == nil {
			return inst, nil
		}
		v.mu.Lock()
		v.live--
		busy := v.live
		last := v.retired && v.live == 0
		v.mu.Unlock()
		<-v.sem
		if last {
			v.closeRuntime()
		}
		var be *BudgetError
		if !errors.As(err, &be) || busy == 0 {
			return nil, err
		}
		// The budget is spent but this plugin has instances at work: wait
		// for one of them rather than fail the call.
		if !v.budgetLog.Swap(true) {
			v.log.Warn("plugin pool cannot grow within the memory budget; calls wait for a free instance",
				slog.Int("instances", busy), slog.Any("err", err))
		}
		select {
		case <-v.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// signal wakes one caller waiting for a pooled instance.
func (v *version) signal() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// release returns an instance to the pool, or closes it when it failed (a
// trapped or interrupted instance is never reused) or the version retired.
func (v *version) release(inst *instance, healthy bool) {
	v.mu.Lock()
	keep := healthy && !v.retired
	if keep {
		v.free = append(v.free, inst)
	} else {
		v.live--
	}
	last := v.retired && v.live == 0
	v.mu.Unlock()
	<-v.sem
	if !keep {
		inst.close()
	}
	v.signal()
	if last {
		v.closeRuntime()
	}
}

// retire stops the version from taking new calls; the runtime closes when
// the last in-flight call returns.
func (v *version) retire() {
	v.mu.Lock()
	if v.retired {
		v.mu.Unlock()
		return
	}
	v.retired = true
	free := v.free
	v.free = nil
	v.live -= len(free)
	last := v.live == 0
	v.mu.Unlock()
	for _, inst := range free {
		inst.close()
	}
	if last {
		v.closeRuntime()
	}
}

func (v *version) closeRuntime() {
	_ = v.rt.Close(context.Background())
}

func (inst *instance) close() {
	inst.stderr.flush()
	inst.v.byModule.Delete(inst.mod)
	_ = inst.mod.Close(context.Background())
	inst.v.host.budget.release(inst.v.reserve)
}

// call encodes inst.req into guest memory, calls handle, and decodes the
// verdict into inst.verdict. Any error means the instance must be discarded.
func (inst *instance) call(ctx context.Context) (*troupev1.Verdict, error) {
	var err error
	inst.buf, err = proto.MarshalOptions{}.MarshalAppend(inst.buf[:0], &inst.req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	n := uint32(len(inst.buf))
	if n > inst.inCap {
		if err := inst.grow(ctx, n); err != nil {
			return nil, err
		}
	}
	if !inst.mem.Write(inst.inPtr, inst.buf) {
		return nil, fmt.Errorf("%w: alloc returned [%d, +%d), outside guest memory", ErrABI, inst.inPtr, inst.inCap)
	}
	inst.stack[0] = uint64(inst.inPtr)
	inst.stack[1] = uint64(n)
	if err := inst.handle.CallWithStack(ctx, inst.stack[:]); err != nil {
		return nil, classify(err)
	}
	res := inst.stack[0]
	ptr, size := uint32(res>>32), uint32(res)
	if size > inst.v.man.Limits.MaxOutput {
		return nil, fmt.Errorf("%w: verdict of %d bytes, limit %d", ErrOutputTooLarge, size, inst.v.man.Limits.MaxOutput)
	}
	proto.Reset(&inst.verdict)
	if size == 0 {
		return &inst.verdict, nil
	}
	out, ok := inst.mem.Read(ptr, size)
	if !ok {
		return nil, fmt.Errorf("%w: handle returned [%d, +%d), outside guest memory of %d bytes", ErrABI, ptr, size, inst.mem.Size())
	}
	if err := proto.Unmarshal(out, &inst.verdict); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadVerdict, err)
	}
	return &inst.verdict, nil
}

// grow replaces the host-owned input buffer with one of at least n bytes.
func (inst *instance) grow(ctx context.Context, n uint32) error {
	if inst.inCap > 0 {
		inst.stack[0], inst.stack[1] = uint64(inst.inPtr), uint64(inst.inCap)
		if err := inst.dealloc.CallWithStack(ctx, inst.stack[:]); err != nil {
			return fmt.Errorf("dealloc: %w", classify(err))
		}
		inst.inPtr, inst.inCap = 0, 0
	}
	c := uint32(256)
	for c < n {
		if c >= 1<<30 {
			c = n
			break
		}
		c *= 2
	}
	inst.stack[0] = uint64(c)
	if err := inst.alloc.CallWithStack(ctx, inst.stack[:]); err != nil {
		return fmt.Errorf("alloc: %w", classify(err))
	}
	ptr := uint32(inst.stack[0])
	if ptr == 0 {
		return fmt.Errorf("%w: alloc(%d) returned 0", ErrABI, c)
	}
	if uint64(ptr)+uint64(c) > uint64(inst.mem.Size()) {
		return fmt.Errorf("%w: alloc(%d) returned %d, outside guest memory of %d bytes", ErrABI, c, ptr, inst.mem.Size())
	}
	inst.inPtr, inst.inCap = ptr, c
	return nil
}

func (v *version) instanceOf(mod api.Module) *instance {
	if x, ok := v.byModule.Load(mod); ok {
		return x.(*instance)
	}
	return nil
}

func (v *version) guestCounter(name string) prometheus.Counter {
	v.gmu.Lock()
	defer v.gmu.Unlock()
	if c, ok := v.gCounter[name]; ok {
		return c
	}
	if len(v.gCounter)+len(v.gGauge) >= maxGuestMetrics {
		return nil
	}
	if v.gCounter == nil {
		v.gCounter = make(map[string]prometheus.Counter)
	}
	c := v.host.metrics.guestCtr.WithLabelValues(v.name, name)
	v.gCounter[name] = c
	return c
}

func (v *version) guestGauge(name string) prometheus.Gauge {
	v.gmu.Lock()
	defer v.gmu.Unlock()
	if g, ok := v.gGauge[name]; ok {
		return g
	}
	if len(v.gCounter)+len(v.gGauge) >= maxGuestMetrics {
		return nil
	}
	if v.gGauge == nil {
		v.gGauge = make(map[string]prometheus.Gauge)
	}
	g := v.host.metrics.guestGge.WithLabelValues(v.name, name)
	v.gGauge[name] = g
	return g
}

func hookName(h troupev1.Hook) string {
	switch h {
	case troupev1.Hook_HOOK_COMMAND:
		return "command"
	case troupev1.Hook_HOOK_EVENT:
		return "event"
	case troupev1.Hook_HOOK_TOPIC:
		return "topic"
	case troupev1.Hook_HOOK_CALL:
		return "call"
	case troupev1.Hook_HOOK_PROBE:
		return "probe"
	}
	return "unspecified"
}

// guestStderr turns what an instance writes to stderr (a Go guest's panic
// message, say) into warnings, one per line, so that a trap's cause is
// visible. The Go runtime writes a few bytes at a time, hence the buffer.
// Each instance has its own; an instance is used by one call at a time.
type guestStderr struct {
	log   *slog.Logger
	buf   []byte
	lines int
}

const maxStderrLines = 200 // per instance; a crash trace fits, a flood does not

func (w *guestStderr) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogMessage - len(w.buf)
			if len(p) > room {
				p = p[:room]
			}
			w.buf = append(w.buf, p...)
			if len(w.buf) >= maxLogMessage {
				w.flush()
			}
			break
		}
		w.buf = append(w.buf, p[:i]...)
		p = p[i+1:]
		w.flush()
	}
	return n, nil
}

func (w *guestStderr) flush() {
	line := strings.TrimRight(string(w.buf), "\r")
	w.buf = w.buf[:0]
	if line == "" || w.lines >= maxStderrLines {
		return
	}
	w.lines++
	if w.lines == maxStderrLines {
		line += " (further stderr output of this instance dropped)"
	}
	w.log.Warn("guest stderr", slog.String("output", line))
}

func firstLineErr(err error) error {
	return errors.New(firstLine(err.Error()))
}
