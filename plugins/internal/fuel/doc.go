// Package fuel bounds the work of a WebAssembly module from inside the
// module, so that a call that never returns cannot exist and the bound costs
// about a nanosecond per loop iteration.
//
// Instrument rewrites the code section: every function entry and every loop
// header subtracts a cost from a counter held in a mutable i64 global, and
// when the counter drops below zero the code calls an imported function
// (ImportModule.ImportName, type () -> i64) whose result becomes the new
// counter. (A function whose first loop header is reached from its entry by
// straight-line code is charged at that header only.) The checks are shaped
// so that wazero's optimizing compiler keeps a loop's variables in registers
// (see checkpoint in code.go). The host's refuel function decides: it hands out another chunk of
// fuel, or it ends the call (a Go host function that panics aborts the call).
// The global is exported as ExportGlobal so that the host sets the first
// chunk before each call.
//
// The cost charged at a checkpoint is the number of instructions that lie in
// its region: the function body, or a loop body, without the loops nested in
// it. Code between two checkpoints only moves forward (every backward branch
// targets a loop header, which is a checkpoint; a call enters a function,
// which is one), so each instruction of a region runs at most once per pass
// through the region's checkpoint, and the fuel spent is an upper bound of
// the instructions executed. Bulk memory instructions (memory.fill,
// memory.copy) count as one instruction; their length is bounded by the
// memory limit.
//
// Between two refuels a call never leaves wasm, so a refuel chunk also
// bounds how long the Go runtime can wait for the goroutine that runs it (a
// goroutine inside wasm code cannot be preempted: garbage collection waits
// for it). Keep chunks small (a millisecond of work).
//
// Usage:
//
//	metered, err := fuel.Instrument(wasm)
//	if err != nil { ... }          // malformed or unsupported module
//	// provide fuel.ImportModule/fuel.ImportName as a host function () -> i64,
//	// compile metered, and before each call:
//	mod.ExportedGlobal(fuel.ExportGlobal).(api.MutableGlobal).Set(chunk)
//
// Instrument accepts the WebAssembly 2.0 core instruction set (what wazero
// compiles by default: multi-value, bulk memory, reference types, SIMD,
// sign extension, non-trapping conversions) plus threads and tail calls.
// Anything else is an error, never a panic; the package is fuzzed.
package fuel
