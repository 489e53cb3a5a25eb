#!/usr/bin/env bash
# Builds the AssemblyScript examples into OUT_DIR with the assemblyscript
# compiler from npm (wasm-examples/install-toolchains.sh runs `npm ci` here).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
asc="$here/node_modules/.bin/asc"
[ -x "$asc" ] || { echo "asc not found: run wasm-examples/install-toolchains.sh" >&2; exit 1; }
for d in "$here"/*/; do
	name="$(basename "$d")"
	[ -f "$d/index.ts" ] && [ -f "$d/$name.toml" ] || continue
	# --exportStart _initialize: top-level code runs when the host calls
	# _initialize; --use abort=: no env.abort import (aborts trap).
	"$asc" "$d/index.ts" -O3 --runtime incremental --exportStart _initialize --use abort= \
		-o "$out/$name.wasm.tmp"
	cp "$d/$name.toml" "$out/$name.toml.tmp"
	mv "$out/$name.toml.tmp" "$out/$name.toml"
	mv "$out/$name.wasm.tmp" "$out/$name.wasm"
	echo "built $out/$name.wasm"
done
