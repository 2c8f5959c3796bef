#!/usr/bin/env bash
# Builds the C router into a component: ./build.sh [OUT.wasm] (default router.wasm)
#
#   1. wit-bindgen's C generator writes the bindings of the `router` world;
#   2. Debian's clang 14 compiles router.c and the bindings against wasi-libc
#      into a WASI preview1 core module (a reactor: no main);
#   3. wasm-tools turns it into a component, adapting preview1 to preview2
#      with the adapter of the wasmtime version the host runs (48).
#
# Needs: clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (Debian), the
# pinned wit-bindgen (`cargo install wit-bindgen-cli --version 0.63.0
# --no-default-features --features c --locked`), wasm-tools (requirements.txt),
# and cargo (to write the adapter, see adapter/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-$here/router.wasm}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! generated=$(wit-bindgen c "$here/../../wit" --world router --out-dir "$work/gen" 2>&1); then
  echo "$generated" >&2
  exit 1
fi

clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
  -I "$work/gen" \
  "$here/router.c" "$work/gen/router.c" "$work/gen/router_component_type.o" \
  -o "$work/router.core.wasm"

# The adapter ships in a crate; a tiny program writes it out. Its build
# lives outside the source tree, next to the other build output.
adapter_target=${CARGO_TARGET_DIR:-$here/../../target}/c-router-adapter
cargo run --quiet --release --locked --manifest-path "$here/adapter/Cargo.toml" \
  --target-dir "$adapter_target" -- "$work/wasi_snapshot_preview1.wasm"

wasm-tools component new "$work/router.core.wasm" \
  --adapt "wasi_snapshot_preview1=$work/wasi_snapshot_preview1.wasm" -o "$out"
wasm-tools validate "$out"
echo "built $out"
