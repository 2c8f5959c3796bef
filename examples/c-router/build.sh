#!/usr/bin/env bash
# Builds the C router into a component: ./build.sh [OUT.wasm] (default router.wasm)
#
#   1. wit-bindgen's C generator writes the bindings of the `router` world
#      (tools/wit-c: the generator as a library, pinned in the workspace);
#   2. Debian's clang 14 compiles router.c and the bindings against wasi-libc
#      into a WASI preview1 core module (a reactor: no main);
#   3. wasm-tools turns it into a component, adapting preview1 to preview2
#      with the adapter of the wasmtime version the host runs (48).
#
# Needs: clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (Debian),
# wasm-tools (requirements.txt), and cargo (it builds tools/wit-c, which
# writes the bindings and the adapter).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-$here/router.wasm}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A cargo project of its own (tools/wit-c), built once into
# <target>/wit-c (target/ of the repository, or $CARGO_TARGET_DIR).
wit_c_target=${CARGO_TARGET_DIR:-$here/../../target}/wit-c
wit_c() {
  cargo run --quiet --locked --manifest-path "$here/../../tools/wit-c/Cargo.toml" \
    --target-dir "$wit_c_target" -- "$@"
}
wit_c bindings "$here/../../wit/0.1.0" router "$work/gen"

clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
  -I "$work/gen" \
  "$here/router.c" "$work/gen/router.c" "$work/gen/router_component_type.o" \
  -o "$work/router.core.wasm"

# The adapter ships in a crate (wasi-preview1-component-adapter-provider,
# versioned with wasmtime); wit-c writes it out.
wit_c adapter "$work/wasi_snapshot_preview1.wasm"

wasm-tools component new "$work/router.core.wasm" \
  --adapt "wasi_snapshot_preview1=$work/wasi_snapshot_preview1.wasm" -o "$out"
wasm-tools validate "$out"
echo "built $out"
