//go:build wasip1

// Command goecho is the Go raw ceiling for benchmarks (not a plugin
// protocol): handle copies its input to an output buffer byte by byte.
package main

import "unsafe"

var (
	pinned = map[uintptr][]byte{}
	out    = make([]byte, 64<<10)
)

//go:wasmexport abi_version
func abiVersion() int32 { return 1 }

//go:wasmexport alloc
func alloc(size uint32) uint32 {
	b := make([]byte, size+1)
	p := uintptr(unsafe.Pointer(&b[0]))
	pinned[p] = b
	return uint32(p)
}

//go:wasmexport dealloc
func dealloc(ptr, size uint32) { delete(pinned, uintptr(ptr)) }

//go:wasmexport handle
func handle(ptr, size uint32) uint64 {
	in := pinned[uintptr(ptr)][:size]
	o := out[:size]
	for i := range in {
		o[i] = in[i]
	}
	return uint64(uintptr(unsafe.Pointer(&out[0])))<<32 | uint64(size)
}

func main() {}
