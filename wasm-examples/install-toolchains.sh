#!/usr/bin/env bash
# Installs the non-Go toolchains the wasm examples and WAT fixtures need,
# from Debian's packages and npm only. Safe to run repeatedly.
#
#   C:              clang + lld + wasi-libc (+ the wasm32 compiler-rt builtins)
#   Rust:           rustc + the wasm32-wasi std + lld-14 (Debian's rustc links with it)
#   WAT fixtures:   wabt (wat2wasm)
#   AssemblyScript: the assemblyscript npm package, installed under wasm-examples/assemblyscript
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
pkgs=(clang lld wasi-libc wabt rustc libstd-rust-dev-wasm32 lld-14)
# The wasm32 builtins library is packaged separately on newer Debian releases.
if apt-cache show libclang-rt-dev-wasm32 >/dev/null 2>&1; then pkgs+=(libclang-rt-dev-wasm32); fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	$sudo apt-get update -qq
	# re-check optional package after update
	if apt-cache show libclang-rt-dev-wasm32 >/dev/null 2>&1 && ! dpkg -s libclang-rt-dev-wasm32 >/dev/null 2>&1; then
		missing+=(libclang-rt-dev-wasm32)
	fi
	$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ -d "$here/assemblyscript" ] && command -v npm >/dev/null 2>&1; then
	(cd "$here/assemblyscript" && npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent)
fi
echo "toolchains ready"
