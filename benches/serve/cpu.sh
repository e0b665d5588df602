#!/usr/bin/env bash
# CPU per decision of each front door of `keyscope serve`, at a fixed request
# rate, for one or more keyscope binaries side by side in one run (so a
# change can be compared with the build before it on the same machine):
#
#   benches/serve/cpu.sh [RATE] [SECONDS] [KEYSCOPE_BINARY...]
#
# With no binary, the current release build. Each binary gets its own store
# (made by that binary), one worker thread, and the server pinned to core 0
# with the load generator (door-cpu) on core 1. The server's CPU time comes
# from /proc/PID/task/*/schedstat, so the client's work is not counted.
set -euo pipefail
cd "$(dirname "$0")/../.."
rate=${1:-2000}
seconds=${2:-10}
shift $(( $# > 2 ? 2 : $# ))
cargo build --release -q -p keyscope -p keyscope-benches --bin keyscope --bin door-cpu
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(target/release/keyscope)
server_cpu=(taskset -c 0)
client_cpu=(taskset -c 1)
if [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; then server_cpu=(); client_cpu=(); fi
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== $(nproc) cores, $rate req/s for ${seconds}s per door, 4 connections; server on core 0"
for bin in "${binaries[@]}"; do
    store=$work/$(basename "$(dirname "$bin")")-$RANDOM.db
    "$bin" --store "$store" scope create --app acme --name viewer --agents view >/dev/null
    key=$("$bin" --store "$store" key create --scope acme/viewer --name bench 2>/dev/null)
    KEYSCOPE_LOG=warn "${server_cpu[@]}" "$bin" --store "$store" serve --workers 1 \
        --listen 127.0.0.1:18180 --grpc-listen 127.0.0.1:18181 \
        >"$work/serve.out" 2>"$work/serve.err" &
    pid=$!
    until grep -q '"ready"' "$work/serve.out" 2>/dev/null; do
        kill -0 "$pid" || { cat "$work/serve.err" >&2; exit 1; }
        sleep 0.05
    done
    echo "-- $bin ($("$bin" --version))"
    "${client_cpu[@]}" target/release/door-cpu "$pid" 127.0.0.1:18180 127.0.0.1:18181 "$key" "$rate" "$seconds"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
