package plugins

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
)

// A panic inside the Wasm runtime while a plugin loads (seen once in a
// race-detector run) fails that load instead of the node: the load is
// tried once more on a fresh runtime, and when that panics too the plugin
// reports the failure and the host goes on serving.
func TestARuntimePanicWhileLoadingFailsTheLoadNotTheNode(t *testing.T) {
	wasm := buildWAT(t, "allow")
	for _, tc := range []struct {
		name   string
		panics int32 // how many compiles panic
		state  State
	}{
		{"once: the retry loads it", 1, StateReady},
		{"every time: it fails to load", 1 << 20, StateFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			compileHook = func(string) {
				if calls.Add(1) <= tc.panics {
					panic("index out of range [3] with length 0")
				}
			}
			// Reset after the host has closed (cleanups run last first).
			t.Cleanup(func() { compileHook = nil })
			dir := t.TempDir()
			writePlugin(t, dir, "allow", wasm, "")
			h := startHost(t, dir, nil)
			list := h.List()
			if len(list) != 1 || list[0].State != tc.state {
				t.Fatalf("List = %+v; want one plugin %s", list, tc.state)
			}
			if tc.state == StateFailed && !strings.Contains(list[0].LastError, "the Wasm runtime panicked") {
				t.Fatalf("LastError = %q; want it to say the runtime panicked", list[0].LastError)
			}
			// The host still decides commands.
			if _, err := h.Command(context.Background(), bankCmd("Deposit", `{"amount":1}`)); err != nil {
				t.Fatalf("Command after the panic: %v", err)
			}
		})
	}
}
