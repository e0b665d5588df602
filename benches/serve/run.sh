#!/usr/bin/env bash
# Load benchmarks of `keyscope serve`, all on loopback, side by side in one run:
#   1. wrk against POST /v1/check;
#   2. wrk against nginx alone, then nginx with keyscope inside its worker
#      natively (ngx_http_keyscope_module, as docs/nginx-module.conf), then
#      through the Lua module (libkeyscope by LuaJIT's FFI, as
#      docs/nginx-embedded.conf), then nginx + auth_request to keyscope
#      (docs/nginx.conf), the same upstream behind all of them;
#   3. grpc-load (tonic) against the ext_authz gRPC service.
# Each runs at 1 connection (latency without queueing) and at CONNECTIONS
# (throughput). The servers (keyscope with one worker thread, nginx with one
# worker process) are pinned to core 0 and the load generators to core 1, so
# that the client never preempts the server it measures.
# Usage: [ROUNDS=N | PROFILE=1] benches/serve/run.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
connections=${2:-32}
for tool in wrk nginx; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "needs $tool: apt-get install wrk nginx libnginx-mod-http-lua" >&2; exit 2; }
done
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || {
    echo "needs nginx's Lua module: apt-get install libnginx-mod-http-lua" >&2; exit 2; }
cargo build --release -q -p keyscope -p keyscope-benches -p keyscope-embed \
    --bin keyscope --bin grpc-load --lib
bin=target/release
[ -f /usr/share/nginx/src/conf_flags ] || {
    echo "needs nginx-dev for the native module: apt-get install nginx-dev" >&2; exit 2; }
module=$(KEYSCOPE_LIB_DIR=$bin integrations/nginx-module/build.sh "$bin/nginx-module")
server_cpu=(taskset -c 0)
client_cpu=(taskset -c 1)
if [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; then server_cpu=(); client_cpu=(); fi
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

export KEYSCOPE_STORE=$work/keyscope.db
$bin/keyscope scope create --app acme --name viewer --agents view >/dev/null
KEY=$($bin/keyscope key create --scope acme/viewer --name bench 2>/dev/null)
export KEY
KEYSCOPE_LOG=warn "${server_cpu[@]}" $bin/keyscope serve --workers 1 \
    --listen 127.0.0.1:18080 --grpc-listen 127.0.0.1:18081 \
    >"$work/serve.out" 2>"$work/serve.err" &
pids+=($!)
until grep -q '"ready"' "$work/serve.out" 2>/dev/null; do sleep 0.05; done

# nginx: :18090 proxies straight to the upstream, :18091 asks keyscope first
# (docs/nginx.conf), :18093 decides in its own worker with libkeyscope
# (docs/nginx-embedded.conf's handler, on the same snapshot), :18094 runs an
# empty access_by_lua handler (the floor of any Lua handler), :18095 decides
# with ngx_http_keyscope_module (docs/nginx-module.conf's `keyscope on;`, on
# the same snapshot, with its own handle); the upstream is nginx itself on
# :18092.
$bin/keyscope snapshot export -o "$work/snapshot.ks" >/dev/null
printf 'snapshot = "%s"\n' "$work/snapshot.ks" >"$work/keyscope.toml"
site=$(sed -e 's/127.0.0.1:8080/127.0.0.1:18080/' -e 's/127.0.0.1:9000/127.0.0.1:18092/' \
           -e 's/listen 80;/listen 127.0.0.1:18091;/' docs/nginx.conf)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
load_module $module;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
daemon off;
user root;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    lua_package_path "$PWD/integrations/nginx/?.lua;;";
    init_worker_by_lua_block {
        require("keyscope").init{ library = "$PWD/$bin/libkeyscope.so", config = "$work/keyscope.toml" }
    }
    keyscope_config $work/keyscope.toml;
    server {
        listen 127.0.0.1:18095;
        location / {
            keyscope on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://platform_api;
        }
    }
    server { listen 127.0.0.1:18092; location / { return 200 "upstream\n"; } }
    server {
        listen 127.0.0.1:18094;
        location / {
            access_by_lua_block { local nothing }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://platform_api;
        }
    }
    server {
        listen 127.0.0.1:18093;
        location / {
            access_by_lua_block { require("keyscope").access() }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://platform_api;
        }
    }
    server {
        listen 127.0.0.1:18090;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://platform_api;
        }
    }
$site
}
CONF
"${server_cpu[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/stderr" &
nginx_pid=$!
pids+=("$nginx_pid")
path=/api/v2/apps/acme/agents/a1
# Ready when the embedded worker allows the key (its handle is open).
until curl -sf -o /dev/null -H "x-api-key: $KEY" "http://127.0.0.1:18093$path" \
    && curl -sf -o /dev/null -H "x-api-key: $KEY" "http://127.0.0.1:18095$path"; do
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$work/nginx/stderr" >&2; exit 1; }
    sleep 0.05
done
# The servers' core time, in ns: nginx's worker and every thread of
# keyscope serve (/proc/PID/task/*/schedstat), so the client's is not
# counted.
nginx_worker=$(pgrep -P "$nginx_pid" | head -1)
server_ns() {
    cat /proc/"$nginx_worker"/task/*/schedstat /proc/"${pids[0]}"/task/*/schedstat 2>/dev/null \
        | awk '{sum += $1} END {printf "%.0f", sum}'
}
run_wrk() { # name, connections, url, [script]
    local name=$1 c=$2 url=$3 script=${4:-}
    local out before after
    before=$(server_ns)
    out=$("${client_cpu[@]}" wrk -t1 -c"$c" -d"${seconds}s" --latency ${script:+-s "$script"} "$url")
    after=$(server_ns)
    local rps p50 p99 non2xx requests
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    printf '%-24s c=%-4s %10s req/s   p50 %8s   p99 %8s   core %6s us/req   non-2xx %s\n' \
        "$name" "$c" "$rps" "$p50" "$p99" \
        "$(awk -v ns=$((after - before)) -v n="$requests" 'BEGIN {printf "%.1f", ns / n / 1000}')" \
        "${non2xx:-0}"
}
echo "== $(nproc) cores, ${seconds}s per run, wrk -t1; servers on core 0, clients on core 1"
# ROUNDS=N: only nginx alone, the module and the Lua handler, N rounds
# interleaved at each connection count, to see through a busy machine's noise.
# PROFILE=1: a perf profile of nginx's worker while the module decides at
# CONNECTIONS: where its core time goes, by object and by symbol.
if [ -n "${PROFILE:-}" ]; then
    command -v perf >/dev/null || { echo "PROFILE needs perf: apt-get install linux-perf" >&2; exit 2; }
    perf record -q -g -o "$work/perf.data" -p "$nginx_worker" -- sleep "$seconds" 2>/dev/null &
    perf_pid=$!
    run_wrk "nginx + module (perf)" "$connections" "http://127.0.0.1:18095$path" benches/serve/key.lua
    wait "$perf_pid" || true
    echo "== where nginx's worker spends its time (perf, self time)"
    [ -s "$work/perf.data" ] || { echo "perf recorded nothing (perf_event_paranoid?)" >&2; exit 2; }
    { perf report -i "$work/perf.data" --no-children --sort dso --stdio \
        | grep -E '^ +[0-9.]+%' | head -12; } || true
    { perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio \
        | grep -E '^ +[0-9.]+%' | head -30; } || true
    exit 0
fi
if [ -n "${ROUNDS:-}" ]; then
    for c in 1 "$connections"; do
        for round in $(seq "$ROUNDS"); do
            run_wrk "nginx alone #$round" "$c" "http://127.0.0.1:18090$path" benches/serve/key.lua
            run_wrk "nginx + module #$round" "$c" "http://127.0.0.1:18095$path" benches/serve/key.lua
            run_wrk "nginx + Lua handler #$round" "$c" "http://127.0.0.1:18093$path" benches/serve/key.lua
        done
    done
    exit 0
fi
for c in 1 "$connections"; do
    run_wrk "keyscope /v1/check" "$c" "http://127.0.0.1:18080/v1/check" benches/serve/check.lua
    run_wrk "nginx alone" "$c" "http://127.0.0.1:18090$path" benches/serve/key.lua
    run_wrk "nginx + module" "$c" "http://127.0.0.1:18095$path" benches/serve/key.lua
    run_wrk "nginx + empty Lua" "$c" "http://127.0.0.1:18094$path" benches/serve/key.lua
    run_wrk "nginx + Lua handler" "$c" "http://127.0.0.1:18093$path" benches/serve/key.lua
    run_wrk "nginx + auth_request" "$c" "http://127.0.0.1:18091$path" benches/serve/key.lua
    "${client_cpu[@]}" $bin/grpc-load 127.0.0.1:18081 "$KEY" "$c" "$seconds"
done
