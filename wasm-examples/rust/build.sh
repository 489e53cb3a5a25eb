#!/usr/bin/env bash
# Builds the Rust examples into OUT_DIR with Debian's rustc and its wasm32-wasi
# standard library (wasm-examples/install-toolchains.sh installs them). Plain
# rustc, no cargo and no crates: the examples use std only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
# Debian's rustc, not a rustup one that may lack the wasm32-wasi target.
rustc="${RUSTC_WASM:-/usr/bin/rustc}"
[ -x "$rustc" ] || { echo "rustc not found: run wasm-examples/install-toolchains.sh" >&2; exit 1; }
for d in "$here"/*/; do
	name="$(basename "$d")"
	[ -f "$d/$name.rs" ] || continue
	"$rustc" --edition 2021 --target wasm32-wasi --crate-type cdylib -C opt-level=2 -C strip=symbols \
		-o "$out/$name.wasm.tmp" "$d/$name.rs"
	cp "$d/$name.toml" "$out/$name.toml.tmp"
	mv "$out/$name.toml.tmp" "$out/$name.toml"
	mv "$out/$name.wasm.tmp" "$out/$name.wasm"
	echo "built $out/$name.wasm"
done
