package plugins

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func FuzzParseManifest(f *testing.F) {
	for _, p := range []string{
		"wasm-examples/go/audit-log/audit-log.toml",
		"wasm-examples/go/validate-amount/validate-amount.toml",
		"wasm-examples/go/rate-limit/rate-limit.toml",
		"wasm-examples/go/partner-api/partner-api.toml",
	} {
		b, err := os.ReadFile(filepath.Join(repoRoot(f), p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("name = \"x\"\n[hooks]\ncommands = [\"*\", \"a*\"]\n[capabilities]\negress = [\"*.example.com\", \"h:1\"]\n"))
	f.Add([]byte("name = \"x\"\n[limits]\ntimeout = \"-1s\"\nmemory_pages = 99999999\n"))
	f.Add([]byte("name = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if m != nil {
				t.Fatal("manifest and error")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed manifest does not validate: %v", err)
		}
		if m.Limits.MemoryPages == 0 || m.Limits.MemoryPages > MaxMemoryPages || m.Limits.Timeout <= 0 ||
			m.Limits.MaxOutput == 0 || m.Limits.MaxInstances <= 0 {
			t.Fatalf("limits without defaults: %+v", m.Limits)
		}
		_ = m.Hooks.String()
		m.Hooks.matchCommand("account", "Deposit")
		m.Hooks.matchEvent("p", "account", "Deposited")
		m.Hooks.matchTopic("t")
	})
}

// fuzzVersion loads a WAT fixture and returns its serving version.
func fuzzVersion(f *testing.F, fixture, manifest string) *version {
	wasm := buildWAT(f, fixture)
	dir := f.TempDir()
	writePlugin(f, dir, fixture, wasm, manifest)
	h := startHost(f, dir, nil)
	v := h.chain.Load().byName[fixture]
	if v == nil {
		f.Fatalf("fixture not loaded: %+v", h.List())
	}
	return v
}

// FuzzGuestResult fuzzes the pointer, length and bytes of a guest's verdict.
func FuzzGuestResult(f *testing.F) {
	v := fuzzVersion(f, "fuzz-result", "name = \"fuzz-result\"\n[hooks]\ncommands = [\"*\"]\n[limits]\nmax_output = 4096\n")
	f.Add(uint64(0), []byte{})
	f.Add(uint64(1024)<<32|2, []byte{0x08, 0x01})
	f.Add(uint64(1024)<<32|6, []byte{0x12, 0x04, 'n', 'o', 'p', 'e'})
	f.Add(uint64(65530)<<32|100, []byte{})
	f.Add(uint64(0xffffffff)<<32|0xffffffff, []byte{})
	f.Add(uint64(1024)<<32|5000, []byte{})
	f.Add(uint64(1024)<<32|3, []byte{0xff, 0xff, 0xff})
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, result uint64, verdict []byte) {
		inst, err := v.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var head [8]byte
		binary.LittleEndian.PutUint64(head[:], result)
		if len(verdict) > 16384 {
			verdict = verdict[:16384]
		}
		if !inst.mem.Write(0, head[:]) || !inst.mem.Write(1024, verdict) {
			t.Fatal("write fixture memory")
		}
		inst.req.Hook = troupev1.Hook_HOOK_COMMAND
		inst.wCmd.Command = bankCmd("Deposit", `{"amount":1}`)
		inst.req.Message = &inst.wCmd
		vd, err := inst.call(ctx)
		v.release(inst, err == nil)

		ptr, size := uint32(result>>32), uint32(result)
		switch {
		case size > 4096:
			if !errors.Is(err, ErrOutputTooLarge) {
				t.Fatalf("size %d: err = %v, want ErrOutputTooLarge", size, err)
			}
		case size > 0 && uint64(ptr)+uint64(size) > 65536:
			if !errors.Is(err, ErrABI) {
				t.Fatalf("[%d, +%d): err = %v, want ErrABI", ptr, size, err)
			}
		case err != nil:
			if !errors.Is(err, ErrBadVerdict) {
				t.Fatalf("in-bounds verdict: err = %v, want nil or ErrBadVerdict", err)
			}
		default:
			_ = vd.GetReason()
		}
	})
}

// FuzzHostImports fuzzes every argument a guest passes to the host imports.
// Whatever the guest passes, the host answers or raises an ABI violation;
// nothing else (no Go runtime error inside a host function).
func FuzzHostImports(f *testing.F) {
	v := fuzzVersion(f, "fuzz-imports", "name = \"fuzz-imports\"\n[hooks]\ncommands = [\"*\"]\n[capabilities.config]\nk = \"value\"\n")
	add := func(op, a, b, c, d uint32, x float64) { f.Add(op, a, b, c, d, x) }
	add(0, 1, 100, 5, 0, 0)                 // log in bounds
	add(0, 9, 100, 5, 0, 0)                 // bad level
	add(0, 1, 0x7ffffff0, 100, 0, 0)        // log out of bounds
	add(0, 1, 65530, 0xffffffff, 0, 0)      // log huge length
	add(1, 0, 100, 3, 0, 1)                 // metric
	add(1, 0, 100, 3, 0, math.NaN())        // metric NaN
	add(1, 7, 100, 3, 0, 1)                 // bad metric kind
	add(2, 100, 1, 200, 10, 0)              // config_get
	add(2, 100, 1, 0xfffffff0, 10, 0)       // config_get output out of bounds
	add(3, 100, 1, 200, 10, 0)              // secret_get
	add(4, 100, 20, 0, 0, 0)                // http_call with garbage request
	add(5, 200, 10, 0, 0, 0)                // http_result without a call
	add(5, 0xfffffff0, 0xffffffff, 0, 0, 0) // http_result out of bounds
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, op, a, b, c, d uint32, x float64) {
		inst, err := v.acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var args [32]byte
		binary.LittleEndian.PutUint32(args[0:], op%6)
		binary.LittleEndian.PutUint32(args[4:], a)
		binary.LittleEndian.PutUint32(args[8:], b)
		binary.LittleEndian.PutUint32(args[12:], c)
		binary.LittleEndian.PutUint32(args[16:], d)
		binary.LittleEndian.PutUint64(args[24:], math.Float64bits(x))
		// Some bytes for the pointers to land on: a key "k" at 100.
		if !inst.mem.Write(0, args[:]) || !inst.mem.Write(100, []byte("k_metric")) {
			t.Fatal("write fixture memory")
		}
		inst.req.Hook = troupev1.Hook_HOOK_COMMAND
		inst.wCmd.Command = bankCmd("Deposit", `{}`)
		inst.req.Message = &inst.wCmd
		_, err = inst.call(ctx)
		v.release(inst, err == nil)
		if err != nil && !errors.Is(err, ErrABI) {
			t.Fatalf("op %d: err = %v, want nil or an ABI violation", op%6, err)
		}
	})
}
