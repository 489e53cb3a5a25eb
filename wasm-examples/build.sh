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
#
# The Go examples compile concurrently. A plugin whose NAME.wasm is newer
# than its sources, its manifest and the guest SDK is left as it is, so a
# second `make run` does not rebuild anything.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build/plugins}"
what="${2:-go}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
go="${GO:-go}"
sdk="$here/../plugins/sdk"

# uptodate NAME DIR: the built module is newer than every input.
uptodate() {
	local wasm="$out/$1.wasm"
	[ -f "$wasm" ] && [ -f "$out/$1.toml" ] || return 1
	[ -z "$(find "$2" "$sdk" "$here/../go.mod" "$here/../go.sum" -newer "$wasm" -print -quit 2>/dev/null)" ]
}

# build_go NAME DIR compiles one Go example; it renames into place so a
# watching node never reads a half-written file (manifest first: a node
# finds a plugin by its .wasm and needs the manifest beside it).
build_go() {
	local name="$1" d="$2"
	(cd "$d" && GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 "$go" build -buildmode=c-shared -trimpath -o "$out/$name.wasm.tmp" .)
	cp "$d/$name.toml" "$out/$name.toml.tmp"
	mv "$out/$name.toml.tmp" "$out/$name.toml"
	mv "$out/$name.wasm.tmp" "$out/$name.wasm"
}

names=() pids=() todo=()
for d in "$here"/go/*/; do
	name="$(basename "$d")"
	[ -f "$d/$name.toml" ] || continue
	if uptodate "$name" "$d"; then
		echo "up to date: $out/$name.wasm"
		continue
	fi
	todo+=("$name")
done
if [ ${#todo[@]} -gt 0 ]; then
	echo "compiling ${#todo[@]} Go example plugins concurrently (${todo[*]}): the first time takes 30-60 s while Go builds its standard library for wasm; Go caches it, and later builds take seconds"
	start=$SECONDS
	for name in "${todo[@]}"; do
		build_go "$name" "$here/go/$name/" &
		names+=("$name") pids+=($!)
	done
	failed=()
	for i in "${!pids[@]}"; do
		if wait "${pids[$i]}"; then
			echo "built $out/${names[$i]}.wasm"
		else
			failed+=("${names[$i]}")
		fi
	done
	if [ ${#failed[@]} -gt 0 ]; then
		echo "wasm-examples/build.sh: failed to build: ${failed[*]}" >&2
		exit 1
	fi
	echo "compiled ${#todo[@]} plugins in $((SECONDS - start))s"
fi

if [ "$what" = "all" ]; then
	for lang in c rust assemblyscript; do
		if [ -x "$here/$lang/build.sh" ]; then
			"$here/$lang/build.sh" "$out" || echo "skipped $lang examples (toolchain missing? run wasm-examples/install-toolchains.sh)" >&2
		fi
	done
fi
