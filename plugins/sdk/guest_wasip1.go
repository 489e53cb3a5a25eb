//go:build wasip1

package sdk

import (
	"errors"
	"unsafe"
)

// pinned keeps the buffers handed to the host by alloc reachable until
// dealloc, so the garbage collector does not free memory the host writes.
var pinned = map[uintptr][]byte{}

//go:wasmexport abi_version
func abiVersion() int32 { return ABIVersion }

//go:wasmexport alloc
func alloc(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	buf := make([]byte, size)
	p := uintptr(unsafe.Pointer(&buf[0]))
	pinned[p] = buf
	return uint32(p)
}

//go:wasmexport dealloc
func dealloc(ptr, size uint32) {
	delete(pinned, uintptr(ptr))
}

//go:wasmexport handle
func handle(ptr, size uint32) uint64 {
	// The host passes a buffer it got from alloc.
	buf, ok := pinned[uintptr(ptr)]
	var res []byte
	if !ok || int(size) > len(buf) {
		res = AppendVerdict(out[:0], Fail(errors.New("sdk: handle called with a buffer not from alloc")))
		out = res
	} else {
		res = Dispatch(buf[:size])
	}
	if len(res) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&res[0])))<<32 | uint64(len(res))
}

//go:wasmimport troupe log
func troupeLog(level int32, ptr unsafe.Pointer, n uint32)

//go:wasmimport troupe metric
func troupeMetric(kind int32, ptr unsafe.Pointer, n uint32, value float64)

//go:wasmimport troupe config_get
func troupeConfigGet(kptr unsafe.Pointer, klen uint32, optr unsafe.Pointer, ocap uint32) int32

//go:wasmimport troupe secret_get
func troupeSecretGet(kptr unsafe.Pointer, klen uint32, optr unsafe.Pointer, ocap uint32) int32

//go:wasmimport troupe http_call
func troupeHTTPCall(ptr unsafe.Pointer, n uint32) int32

//go:wasmimport troupe http_result
func troupeHTTPResult(ptr unsafe.Pointer, n uint32) int32

func hostLog(level int32, msg string) {
	troupeLog(level, unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

func hostMetric(kind int32, name string, value float64) {
	troupeMetric(kind, unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)), value)
}

func hostLookup(secret bool, key string) (string, bool) {
	get := troupeConfigGet
	if secret {
		get = troupeSecretGet
	}
	kp := unsafe.Pointer(unsafe.StringData(key))
	buf := make([]byte, 256)
	for {
		n := get(kp, uint32(len(key)), unsafe.Pointer(&buf[0]), uint32(len(buf)))
		if n < 0 {
			return "", false
		}
		if int(n) <= len(buf) {
			return string(buf[:n]), true
		}
		buf = make([]byte, n)
	}
}

func hostHTTP(req []byte) ([]byte, error) {
	var p unsafe.Pointer
	if len(req) > 0 {
		p = unsafe.Pointer(&req[0])
	}
	n := troupeHTTPCall(p, uint32(len(req)))
	if n < 0 {
		return nil, errors.New("http_call: refused by host")
	}
	buf := make([]byte, n+1) // +1: never a zero-length buffer
	if m := troupeHTTPResult(unsafe.Pointer(&buf[0]), uint32(len(buf))); m != n {
		return nil, errors.New("http_call: no response from host")
	}
	return buf[:n], nil
}
