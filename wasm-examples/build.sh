#!/usr/bin/env bash
# Builds the wasm examples into a plugin directory: NAME.wasm with its
# manifest NAME.toml beside it, ready for `troupe dev --plugins DIR`.
#
#   wasm-examples/build.sh [OUT_DIR] [go|all]
#
# OUT_DIR defaults to wasm-examples/build/plugins. "go" (the default) builds
# the Go examples only (Go is all it needs); "all" also builds the C, Rust
# and AssemblyScript examples, whose toolchains install-toolchains.sh
# installs (a missing toolchain is reported and skipped, not fatal).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build/plugins}"
what="${2:-go}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
go="${GO:-go}"

# Go examples: each directory under go/ is one plugin.
for d in "$here"/go/*/; do
	name="$(basename "$d")"
	[ -f "$d/$name.toml" ] || continue
	(cd "$d" && GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 "$go" build -buildmode=c-shared -trimpath -o "$out/$name.wasm.tmp" .)
	cp "$d/$name.toml" "$out/$name.toml.tmp"
	# Rename into place so a watching node never reads a half-written file.
	mv "$out/$name.toml.tmp" "$out/$name.toml"
	mv "$out/$name.wasm.tmp" "$out/$name.wasm"
	echo "built $out/$name.wasm"
done

if [ "$what" = "all" ]; then
	for lang in c rust assemblyscript; do
		if [ -x "$here/$lang/build.sh" ]; then
			"$here/$lang/build.sh" "$out" || echo "skipped $lang examples (toolchain missing? run wasm-examples/install-toolchains.sh)" >&2
		fi
	done
fi
