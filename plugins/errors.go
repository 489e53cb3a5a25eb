package plugins

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/tetratelabs/wazero/sys"
)

var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("plugins: host closed")
	// ErrNotFound is returned by Call for a name that is not a loaded
	// ambassador.
	ErrNotFound = errors.New("plugins: no such plugin")
	// ErrABI wraps violations of the plugin ABI by a guest: missing or
	// mistyped exports, a wrong abi_version, out-of-bounds pointers,
	// malformed arguments to host imports.
	ErrABI = errors.New("plugins: ABI violation")
	// ErrTrap wraps a guest that trapped or exited during a call.
	ErrTrap = errors.New("plugins: guest trapped")
	// ErrTimeout wraps a call (or a load-time instantiation or probe) that
	// ran past its deadline or spent its fuel and was ended (a
	// *BoundError).
	ErrTimeout = errors.New("plugins: deadline exceeded")
	// ErrOutputTooLarge wraps a verdict larger than the plugin's max_output.
	ErrOutputTooLarge = errors.New("plugins: output too large")
	// ErrBadVerdict wraps a verdict that is not a valid Verdict message.
	ErrBadVerdict = errors.New("plugins: undecodable verdict")
	// ErrGuest wraps a failure the guest reported itself (Verdict.error).
	ErrGuest = errors.New("plugins: guest reported failure")
	// ErrEgressDenied is the error of an http_call to a host that is not on
	// the plugin's egress allow-list.
	ErrEgressDenied = errors.New("plugins: egress denied")
)

// CallError reports a plugin that failed instead of deciding. It wraps one
// of ErrABI, ErrTrap, ErrTimeout, ErrOutputTooLarge, ErrBadVerdict, ErrGuest
// or a context error.
type CallError struct {
	Plugin string
	Err    error
}

func (e *CallError) Error() string { return fmt.Sprintf("plugin %s: %v", e.Plugin, e.Err) }
func (e *CallError) Unwrap() error { return e.Err }

// LoadError reports a plugin file that could not be loaded.
type LoadError struct {
	Plugin string
	Err    error
}

func (e *LoadError) Error() string { return fmt.Sprintf("plugin %s: load: %v", e.Plugin, e.Err) }
func (e *LoadError) Unwrap() error { return e.Err }

// NotRegularError refuses a plugin file that is not a regular file (or a
// symlink to one): a named pipe, a device, a socket, a directory.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	what := "not a regular file"
	switch t := e.Mode.Type(); {
	case t&fs.ModeNamedPipe != 0:
		what = "a named pipe (FIFO)"
	case t&fs.ModeCharDevice != 0:
		what = "a character device"
	case t&fs.ModeDevice != 0:
		what = "a device"
	case t&fs.ModeSocket != 0:
		what = "a socket"
	case t&fs.ModeDir != 0:
		what = "a directory"
	}
	return fmt.Sprintf("%s is %s, not a regular file: skipped (only regular files, or symlinks to them, are read)", filepath.Base(e.Path), what)
}

// RejectedError is returned by Call when an ambassador rejects the call.
type RejectedError struct {
	Plugin string
	Reason string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("plugin %s rejected the call: %s", e.Plugin, e.Reason)
}

// abiViolation is raised (as a panic) by host imports that receive
// malformed arguments from the guest. wazero recovers it, aborts the call
// and returns it wrapped; the instance is then discarded.
type abiViolation struct{ msg string }

func (e *abiViolation) Error() string { return e.msg }
func (e *abiViolation) Unwrap() error { return ErrABI }

func violate(format string, args ...any) {
	panic(&abiViolation{msg: "plugins: ABI violation: " + fmt.Sprintf(format, args...)})
}

// classify maps an error from a guest call to one of the package's
// sentinel errors, keeping the original message.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var av *abiViolation
	if errors.As(err, &av) {
		return av
	}
	var be *BoundError
	if errors.As(err, &be) {
		return be
	}
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch ee.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			return fmt.Errorf("%w: interrupted", ErrTimeout)
		}
		return fmt.Errorf("%w: exited with code %d", ErrTrap, ee.ExitCode())
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	for _, s := range []error{ErrABI, ErrTrap, ErrTimeout, ErrOutputTooLarge, ErrBadVerdict, ErrGuest} {
		if errors.Is(err, s) {
			return err
		}
	}
	return fmt.Errorf("%w: %s", ErrTrap, firstLine(err.Error()))
}

// reasonLabel names an error's class for the failures metric.
func reasonLabel(err error) string {
	switch {
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrABI):
		return "abi"
	case errors.Is(err, ErrOutputTooLarge):
		return "output"
	case errors.Is(err, ErrBadVerdict):
		return "verdict"
	case errors.Is(err, ErrGuest):
		return "guest"
	}
	return "trap"
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
