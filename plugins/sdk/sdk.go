// Package sdk is the guest side of Troupe's plugin ABI v1 for Go plugins.
//
// A plugin is a package main built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o NAME.wasm .
//
// It registers its handlers in init (a c-shared module never runs main):
//
//	func init() {
//		sdk.OnCommand(func(ctx *sdk.Context, c *sdk.Command) sdk.Verdict {
//			sdk.Info("saw " + c.Type)
//			return sdk.Allow()
//		})
//	}
//
//	func main() {}
//
// The package exports abi_version, alloc, dealloc and handle, decodes the
// request, calls the handler for its hook, and encodes the verdict. A hook
// without a handler allows. A handler that panics fails the call (the host
// applies the plugin's failure policy) without killing the instance.
//
// The request passed to a handler (the *Command and everything it holds:
// strings, Payload, Metadata) is valid only until the handler returns: the
// SDK decodes without copying and reuses its memory for the next call, which
// keeps a call free of allocations. Copy what you keep beyond the call with
// strings.Clone, bytes.Clone or the Clone methods.
//
// Outside wasm (go test on the host) the host imports are stubs: Log writes
// to standard error, Config and Secret find nothing, HTTP fails; Dispatch
// lets tests drive a plugin's handlers with encoded requests.
package sdk

import (
	"fmt"
	"runtime/debug"
	"strconv"
)

// ABIVersion is the plugin ABI version this package implements.
const ABIVersion = 1

var (
	onCommand func(*Context, *Command) Verdict
	onEvent   func(*Context, *Event) Verdict
	onTopic   func(*Context, *TopicMessage) Verdict
	onCall    func(*Context, *Call) Verdict
)

// OnCommand sets the handler for commands on their way to entities.
func OnCommand(f func(*Context, *Command) Verdict) { onCommand = f }

// OnEvent sets the handler for events on their way to projections.
func OnEvent(f func(*Context, *Event) Verdict) { onEvent = f }

// OnTopic sets the handler for topic messages on their way to subscribers.
func OnTopic(f func(*Context, *TopicMessage) Verdict) { onTopic = f }

// OnCall sets an ambassador's handler; answer with Respond, Reject or Fail.
func OnCall(f func(*Context, *Call) Verdict) { onCall = f }

// out holds the last encoded verdict; the host copies it before the next
// call into this instance.
var out []byte

// current is the request being handled, reused by every call so that the
// call path allocates nothing.
var current request

// Dispatch decodes one encoded PluginRequest, runs the registered handler
// and returns the encoded Verdict. The result is valid until the next call.
// It is not safe for concurrent use (a wasm instance runs one call at a
// time); the handler's request aliases req.
func Dispatch(req []byte) []byte {
	out = AppendVerdict(out[:0], dispatch(req))
	return out
}

func dispatch(b []byte) (v Verdict) {
	defer func() {
		if r := recover(); r != nil {
			v = Verdict{err: fmt.Sprintf("panic: %v\n%s", r, debug.Stack())}
			if len(v.err) > 2048 {
				v.err = v.err[:2048]
			}
		}
	}()
	req := &current
	current = request{}
	if err := decodeRequest(req, b); err != nil {
		return Fail(err)
	}
	if req.ABIVersion != 0 && req.ABIVersion != ABIVersion {
		return Fail(fmt.Errorf("sdk: host speaks ABI %d, plugin %d", req.ABIVersion, ABIVersion))
	}
	ctx := &req.Context
	switch req.Hook {
	case HookProbe:
		return Allow()
	case HookCommand:
		if onCommand != nil && req.Command != nil {
			return onCommand(ctx, req.Command)
		}
	case HookEvent:
		if onEvent != nil && req.Event != nil {
			return onEvent(ctx, req.Event)
		}
	case HookTopic:
		if onTopic != nil && req.Topic != nil {
			return onTopic(ctx, req.Topic)
		}
	case HookCall:
		if onCall == nil {
			return Fail(fmt.Errorf("sdk: plugin has no call handler"))
		}
		if req.Call != nil {
			return onCall(ctx, req.Call)
		}
	default:
		return Fail(fmt.Errorf("sdk: unknown hook %d", int32(req.Hook)))
	}
	return Allow()
}

// Level is a log level of the host's log import.
type Level int32

const (
	LevelDebug Level = 0
	LevelInfo  Level = 1
	LevelWarn  Level = 2
	LevelError Level = 3
)

func (l Level) String() string {
	switch l {
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	}
	return "level(" + strconv.Itoa(int(l)) + ")"
}

// Log writes msg to the node's log under this plugin's name.
func Log(level Level, msg string) { hostLog(int32(level), msg) }

// Debug, Info, Warn and Error log at their level.
func Debug(msg string) { Log(LevelDebug, msg) }
func Info(msg string)  { Log(LevelInfo, msg) }
func Warn(msg string)  { Log(LevelWarn, msg) }
func Error(msg string) { Log(LevelError, msg) }

// Count adds delta (>= 0) to the plugin counter name ([a-z0-9_], at most
// 64 bytes), exported as troupe_plugin_guest_total{plugin, name}.
func Count(name string, delta float64) { hostMetric(0, name, delta) }

// Gauge sets the plugin gauge name, exported as
// troupe_plugin_guest_value{plugin, name}.
func Gauge(name string, value float64) { hostMetric(1, name, value) }

// Config returns the manifest's [capabilities.config] value for key.
func Config(key string) (string, bool) { return hostLookup(false, key) }

// Secret returns the secret key granted by the manifest's
// [capabilities.secrets]. Never log it.
func Secret(key string) (string, bool) { return hostLookup(true, key) }

// HTTP performs an outbound request through the host. Only hosts on the
// manifest's egress allow-list are reachable; the request shares the call's
// deadline. A non-2xx status is a response, not an error.
func HTTP(req HTTPRequest) (*HTTPResponse, error) {
	raw, err := hostHTTP(AppendHTTPRequest(nil, &req))
	if err != nil {
		return nil, err
	}
	return DecodeHTTPResponse(raw)
}
