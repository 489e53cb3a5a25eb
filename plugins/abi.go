package plugins

import (
	"context"
	"log/slog"
	"math"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// ABI v1. docs/plugins.md is the normative description; these are the names
// and signatures the host checks.
const (
	// ABIVersion is the value a guest's abi_version export must return.
	ABIVersion = 1

	// ImportModule is the module name of every host import.
	ImportModule = "troupe"

	exportABIVersion = "abi_version" // () -> i32
	exportAlloc      = "alloc"       // (size i32) -> i32
	exportDealloc    = "dealloc"     // (ptr i32, size i32) -> ()
	exportHandle     = "handle"      // (ptr i32, len i32) -> i64
	exportInitialize = "_initialize" // () -> (), optional
	exportMemory     = "memory"
)

// Log levels of the log import.
const (
	LogDebug = 0
	LogInfo  = 1
	LogWarn  = 2
	LogError = 3
)

// Kinds of the metric import.
const (
	MetricCounter = 0 // add value (>= 0) to a counter
	MetricGauge   = 1 // set a gauge to value
)

const (
	maxLogMessage   = 4096 // longer messages are truncated
	maxMetricName   = 64
	maxGuestMetrics = 64 // distinct metric names per plugin version
	maxHTTPRequest  = 4 << 20
)

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
	f64 = api.ValueTypeF64
)

// exportSigs are the required exports with their exact signatures.
var exportSigs = []struct {
	name            string
	params, results []api.ValueType
}{
	{exportABIVersion, nil, []api.ValueType{i32}},
	{exportAlloc, []api.ValueType{i32}, []api.ValueType{i32}},
	{exportDealloc, []api.ValueType{i32, i32}, nil},
	{exportHandle, []api.ValueType{i32, i32}, []api.ValueType{i64}},
}

// guestBytes returns a view of guest memory [ptr, ptr+n). A range outside
// memory is an ABI violation: the call is aborted, the host keeps running.
func guestBytes(mod api.Module, ptr, n uint32, what string) []byte {
	if n == 0 {
		return nil
	}
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		violate("%s: range [%d, +%d) outside guest memory of %d bytes", what, ptr, n, mod.Memory().Size())
	}
	return b
}

// instantiateImports defines the "troupe" host module in the version's
// runtime. Every function uses the stack-based builder: no reflection, no
// allocation on the way in.
func (v *version) instantiateImports(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(ImportModule)
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(v.hostLog),
		[]api.ValueType{i32, i32, i32}, nil).
		WithParameterNames("level", "ptr", "len").Export("log")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(v.hostMetric),
		[]api.ValueType{i32, i32, i32, f64}, nil).
		WithParameterNames("kind", "name_ptr", "name_len", "value").Export("metric")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(v.hostConfigGet),
		[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("key_ptr", "key_len", "out_ptr", "out_cap").Export("config_get")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(v.hostSecretGet),
		[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("key_ptr", "key_len", "out_ptr", "out_cap").Export("secret_get")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(v.hostHTTPCall),
		[]api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("req_ptr", "req_len").Export("http_call")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(v.hostHTTPResult),
		[]api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("out_ptr", "out_cap").Export("http_result")
	_, err := b.Instantiate(ctx)
	return err
}

// log(level i32, ptr i32, len i32)
func (v *version) hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	level, ptr, n := api.DecodeI32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	var lv slog.Level
	switch level {
	case LogDebug:
		lv = slog.LevelDebug
	case LogInfo:
		lv = slog.LevelInfo
	case LogWarn:
		lv = slog.LevelWarn
	case LogError:
		lv = slog.LevelError
	default:
		violate("log: level %d not in [0, 3]", level)
	}
	// The whole range must lie in memory (an out-of-range pair is an ABI
	// violation however long it is); only then is the message truncated.
	msg := guestBytes(mod, ptr, n, "log message")
	truncated := false
	if len(msg) > maxLogMessage {
		msg, truncated = msg[:maxLogMessage], true
	}
	if !v.log.Enabled(ctx, lv) {
		return
	}
	s := string(msg)
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // replaces invalid bytes with U+FFFD
	}
	if truncated {
		v.log.Log(ctx, lv, s, slog.Bool("truncated", true))
		return
	}
	v.log.Log(ctx, lv, s)
}

// metric(kind i32, name_ptr i32, name_len i32, value f64)
func (v *version) hostMetric(_ context.Context, mod api.Module, stack []uint64) {
	kind, ptr, n, val := api.DecodeI32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2]), api.DecodeF64(stack[3])
	if n == 0 || n > maxMetricName {
		violate("metric: name length %d not in [1, %d]", n, maxMetricName)
	}
	name := guestBytes(mod, ptr, n, "metric name")
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			violate("metric: name %q: want [a-z0-9_]", name)
		}
	}
	if math.IsNaN(val) || math.IsInf(val, 0) {
		violate("metric: value %v is not finite", val)
	}
	switch kind {
	case MetricCounter:
		if val < 0 {
			violate("metric: counter %q: negative increment %v", name, val)
		}
		if c := v.guestCounter(string(name)); c != nil {
			c.Add(val)
		}
	case MetricGauge:
		if g := v.guestGauge(string(name)); g != nil {
			g.Set(val)
		}
	default:
		violate("metric: kind %d not in [0, 1]", kind)
	}
}

// config_get(key_ptr, key_len, out_ptr, out_cap) -> i32
func (v *version) hostConfigGet(_ context.Context, mod api.Module, stack []uint64) {
	stack[0] = v.lookup(mod, stack, v.man.Capabilities.Config, "config_get")
}

// secret_get(key_ptr, key_len, out_ptr, out_cap) -> i32
func (v *version) hostSecretGet(_ context.Context, mod api.Module, stack []uint64) {
	stack[0] = v.lookup(mod, stack, v.secrets, "secret_get")
}

// lookup implements config_get and secret_get: it returns -1 when the key is
// absent, else the value's length; the value is written to out only when it
// fits in out_cap (otherwise the guest retries with a larger buffer).
func (v *version) lookup(mod api.Module, stack []uint64, values map[string]string, what string) uint64 {
	kp, kn, op, oc := api.DecodeU32(stack[0]), api.DecodeU32(stack[1]), api.DecodeU32(stack[2]), api.DecodeU32(stack[3])
	if kn > 1024 {
		violate("%s: key length %d > 1024", what, kn)
	}
	key := guestBytes(mod, kp, kn, what+" key")
	val, ok := values[string(key)]
	if !ok {
		return api.EncodeI32(-1)
	}
	if len(val) > math.MaxInt32 {
		violate("%s: value too large", what)
	}
	if uint32(len(val)) <= oc && len(val) > 0 {
		if !mod.Memory().WriteString(op, val) {
			violate("%s: output range [%d, +%d) outside guest memory", what, op, len(val))
		}
	}
	return api.EncodeI32(int32(len(val)))
}

// http_call(req_ptr, req_len) -> i32: performs the HttpRequest and returns
// the length of the encoded HttpResponse, which http_result copies out.
func (v *version) hostHTTPCall(ctx context.Context, mod api.Module, stack []uint64) {
	ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	if n > maxHTTPRequest {
		violate("http_call: request length %d > %d", n, maxHTTPRequest)
	}
	req := guestBytes(mod, ptr, n, "http_call request")
	inst := v.instanceOf(mod)
	if inst == nil {
		violate("http_call: unknown instance")
	}
	resp := v.doHTTP(ctx, req)
	inst.pending = resp
	stack[0] = api.EncodeI32(int32(len(resp)))
}

// http_result(out_ptr, out_cap) -> i32: copies the pending HttpResponse of
// the last http_call and returns its length; -1 when none is pending or it
// does not fit (nothing is copied then; the response stays pending).
func (v *version) hostHTTPResult(_ context.Context, mod api.Module, stack []uint64) {
	ptr, capacity := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
	inst := v.instanceOf(mod)
	if inst == nil || inst.pending == nil || uint32(len(inst.pending)) > capacity {
		stack[0] = api.EncodeI32(-1)
		return
	}
	if len(inst.pending) > 0 && !mod.Memory().Write(ptr, inst.pending) {
		violate("http_result: output range [%d, +%d) outside guest memory", ptr, len(inst.pending))
	}
	stack[0] = api.EncodeI32(int32(len(inst.pending)))
	inst.pending = nil
}
