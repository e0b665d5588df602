#!/usr/bin/env bash
# Runs the conformance suite in the three hosts: Rust (the keyscope binary),
# Node (jco) and Python (wasmtime-py), against the same component.
#
#   KEYSCOPE=target/release/keyscope BENCH=20000 conformance/run.sh
#
# KEYSCOPE defaults to target/debug/keyscope; BENCH=N also times N decisions
# in each host. Each runner installs its own dependencies (npm ci, pip in a
# venv). First it proves that each runner fails on a wrong expected decision
# (in a scratch copy), then it runs the suite in all three.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
keyscope=${KEYSCOPE:-$root/target/debug/keyscope}
work=$root/target/conformance
mkdir -p "$work"

"$keyscope" policy export -o "$work/policy.wasm"
(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
[ -x "$work/venv/bin/python" ] || python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"

runners=(rust node python)
run() { # run RUNNER SUITE [ARGS...]
    local runner=$1 suite=$2
    shift 2
    case $runner in
        rust) "$keyscope" conformance --suite "$suite" --policy "$work/policy.wasm" "$@" ;;
        node) node "$here/node/run.mjs" "$work/policy.wasm" "$suite" "$@" ;;
        python) "$work/venv/bin/python" "$here/python/run.py" "$work/policy.wasm" "$suite" "$@" ;;
    esac
}

# A scratch copy with one expected decision flipped must fail every runner.
"$work/venv/bin/python" - "$here/suite.json" "$work/wrong-suite.json" <<'PY'
import json, sys
suite = json.load(open(sys.argv[1]))
case = suite["groups"][0]["cases"][0]
case["expect"]["allow"] = not case["expect"]["allow"]
json.dump(suite, open(sys.argv[2], "w"))
PY
for runner in "${runners[@]}"; do
    if run "$runner" "$work/wrong-suite.json" >/dev/null 2>&1; then
        echo "conformance: the $runner runner passed a suite with a wrong expected decision" >&2
        exit 1
    fi
    echo "conformance: the $runner runner fails on a wrong expected decision, as it must"
done

bench=()
[ -n "${BENCH:-}" ] && bench=(--bench "$BENCH")
for runner in "${runners[@]}"; do
    echo "== $runner"
    run "$runner" "$here/suite.json" "${bench[@]}"
done
KEYSCOPE="$keyscope" bash "$here/bundles.sh"
