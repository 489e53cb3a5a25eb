#!/usr/bin/env bash
# Builds the C examples into OUT_DIR with Debian's clang, lld and wasi-libc
# (wasm-examples/install-toolchains.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
cc="${CC_WASM:-clang}"
command -v "$cc" >/dev/null || { echo "clang not found: run wasm-examples/install-toolchains.sh" >&2; exit 1; }
for d in "$here"/*/; do
	name="$(basename "$d")"
	[ -f "$d/$name.c" ] || continue
	# A reactor module: wasi-libc's _initialize runs constructors, no main.
	"$cc" --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor \
		-Wall -Werror -o "$out/$name.wasm.tmp" "$d/$name.c"
	cp "$d/$name.toml" "$out/$name.toml.tmp"
	mv "$out/$name.toml.tmp" "$out/$name.toml"
	mv "$out/$name.wasm.tmp" "$out/$name.wasm"
	echo "built $out/$name.wasm"
done
