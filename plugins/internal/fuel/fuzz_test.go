package fuel

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// FuzzInstrument: Instrument never panics; it is deterministic; a module
// that wazero accepts is never called malformed, and its metered version
// is accepted too (and keeps its exports).
//
//	go test -run '^$' -fuzz FuzzInstrument -fuzztime 2m ./plugins/internal/fuel/
func FuzzInstrument(f *testing.F) {
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x07\x05\x01\x01f\x00\x00\x0a\x04\x01\x02\x00\x0b"))
	matches, _ := filepath.Glob(filepath.Join(repoRoot(), "plugins", "testdata", "*.wat"))
	matches = append(matches, filepath.Join(repoRoot(), "plugins", "internal", "fuel", "testdata", "allops.wat"),
		filepath.Join(repoRoot(), "plugins", "internal", "fuel", "testdata", "refuel.wat"))
	for _, m := range matches {
		f.Add(wat(f, strings.TrimPrefix(m, repoRoot()+"/"), "--enable-threads", "--enable-tail-call"))
	}
	ctx := context.Background()
	// The interpreter validates exactly as the compiler does, and compiles
	// much faster.
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().
		WithCoreFeatures(api.CoreFeaturesV2|experimental.CoreFeaturesThreads|experimental.CoreFeaturesTailCall))
	f.Cleanup(func() { rt.Close(ctx) })
	f.Fuzz(func(t *testing.T, wasm []byte) {
		out, err := Instrument(wasm)
		if err != nil {
			// Refused with an error. What Instrument refuses never reaches
			// wazero, whose decoder allocates by declared lengths: so the
			// fuzzer does not compile it either.
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnsupported", err)
			}
			return
		}
		again, err := Instrument(wasm)
		if err != nil || !bytes.Equal(out, again) {
			t.Fatalf("not deterministic: %v", err)
		}
		orig, err := rt.CompileModule(ctx, wasm)
		if err != nil {
			return // invalid input that Instrument could not tell: wazero refuses it
		}
		defer orig.Close(ctx)
		cm, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("the metered module does not compile: %v", err)
		}
		defer cm.Close(ctx)
		for name := range orig.ExportedFunctions() {
			if _, ok := cm.ExportedFunctions()[name]; !ok {
				t.Fatalf("export %q lost", name)
			}
		}
	})
}
