#!/usr/bin/env bash
# Builds every example plugin from source into $AGENTROUTER_EXAMPLES_DIR
# (default: target/examples/), where tests/examples.rs finds them:
#
#   python-agent.wasm, python-agent-v2.wasm   examples/python-agent (componentize-py)
#   js-validator.wasm, js-validator-v2.wasm   examples/js-validator (componentize-js)
#   c-router.wasm                             examples/c-router (clang + wasi-libc)
#
# The -v2 components are the same sources with VERSION set to 2.0.0: the
# second version the hot-swap and canary tests roll out.
#
# They build against the frozen contract 0.1.0 (wit/0.1.0/): the examples
# test that components of the first contract keep working on a host that
# implements 0.2.0, and a componentize-py agent built from 0.2.0 would
# import http and tools (it imports its whole world), which `check`
# refuses in a slot without a grant.
#
# Needs on PATH: componentize-py and wasm-tools (pip install -r
# python-agent/requirements.txt -r c-router/requirements.txt), node + npm,
# clang/lld/wasi-libc, cargo (for tools/wit-c). .ci/run installs them all.
# Each step prints how long it took.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${AGENTROUTER_EXAMPLES_DIR:-$root/target/examples}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { # step NAME COMMAND...: run it, say how long it took
  local name=$1 start=$SECONDS
  shift
  "$@"
  echo "   $name: $((SECONDS - start)) s"
}

# A copy of a source with VERSION "1.0.0" replaced by "2.0.0"; fails if the
# source has no such line, so the v2 build can never silently equal v1.
v2() { # v2 SOURCE DEST
  grep -Eq '^(export const )?VERSION = "1\.0\.0";?$' "$1" || { echo "$1: no VERSION = \"1.0.0\" line"; exit 1; }
  sed -E 's/^((export const )?VERSION = )"1\.0\.0"/\1"2.0.0"/' "$1" >"$2"
}

echo "== examples -> $out"

py() { # py DIR OUT: componentize the app module in DIR
  (cd "$1" && componentize-py -d "$root/wit/0.1.0" -w agent componentize app -o "$2" >/dev/null)
}
step "python-agent (componentize-py)" py "$root/examples/python-agent" "$out/python-agent.wasm"
mkdir -p "$work/py2"
v2 "$root/examples/python-agent/app.py" "$work/py2/app.py"
step "python-agent v2" py "$work/py2" "$out/python-agent-v2.wasm"

js_dir=$root/examples/js-validator
if [ ! -e "$js_dir/node_modules" ]; then
  step "js-validator: npm ci" bash -c "cd '$js_dir' && npm ci --no-audit --no-fund --loglevel=error"
fi
js() { # js SOURCE OUT
  (cd "$js_dir" && node_modules/.bin/componentize-js "$1" --wit "$root/wit/0.1.0" --world-name validator \
    --disable http fetch-event -o "$2" >/dev/null)
}
step "js-validator (componentize-js)" js "$js_dir/validator.js" "$out/js-validator.wasm"
v2 "$js_dir/validator.js" "$work/validator-v2.js"
step "js-validator v2" js "$work/validator-v2.js" "$out/js-validator-v2.wasm"

c() { "$root/examples/c-router/build.sh" "$out/c-router.wasm" >/dev/null; }
step "c-router (clang + wasi-libc)" c

ls -l "$out"/*.wasm
