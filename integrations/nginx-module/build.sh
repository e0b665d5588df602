#!/usr/bin/env bash
# Builds ngx_http_keyscope_module.so, a dynamic module for the nginx this
# machine runs (Debian's, built --with-compat), beside libkeyscope.so:
#
#   integrations/nginx-module/build.sh [--release] [OUT_DIR]
#
# It builds libkeyscope (cargo, --release or debug), then nginx's own
# `configure` with the flags nginx was built with (Debian's nginx-dev ships
# both) and `make modules`. OUT_DIR (default target/nginx-module) receives
# ngx_http_keyscope_module.so and libkeyscope.so; copy both into
# /usr/lib/nginx/modules/ (the module finds the library beside itself).
#
# Needs: apt-get install nginx nginx-dev gcc make
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
profile=debug
cargo_flags=()
if [ "${1:-}" = "--release" ]; then
    profile=release
    cargo_flags=(--release)
    shift
fi
out=${1:-$root/target/nginx-module}
mkdir -p "$out"
out=$(cd "$out" && pwd)
src=/usr/share/nginx/src
[ -f "$src/conf_flags" ] || {
    echo "build.sh: $src/conf_flags is missing: apt-get install nginx-dev" >&2
    exit 2
}

if [ -z "${KEYSCOPE_LIB_DIR:-}" ]; then
    (cd "$root" && cargo build -q "${cargo_flags[@]}" -p keyscope-embed)
    KEYSCOPE_LIB_DIR=$root/target/$profile
fi
KEYSCOPE_LIB_DIR=$(cd "$KEYSCOPE_LIB_DIR" && pwd)
export KEYSCOPE_LIB_DIR
export KEYSCOPE_INCLUDE_DIR=$root/host/embed/include
[ -f "$KEYSCOPE_LIB_DIR/libkeyscope.so" ] || {
    echo "build.sh: no libkeyscope.so in $KEYSCOPE_LIB_DIR" >&2
    exit 2
}

# nginx's configure writes a Makefile where it runs: run it in a copy of
# the sources, not in /usr/share.
work=$(mktemp -d -t keyscope-nginx-module.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cp -r "$src" "$work/nginx"
cd "$work/nginx"
# shellcheck disable=SC1091
. ./conf_flags
# Debian's hardening, and warnings as errors.
cc_opt="-fPIC -O2 -Wall -Wextra -Wno-unused-parameter -Werror"
cc_opt+=" -fstack-protector-strong -D_FORTIFY_SOURCE=2 -Wformat -Werror=format-security"
./configure "${NGX_CONF_FLAGS[@]}" \
    --with-cc-opt="$cc_opt" \
    --with-ld-opt="-fPIC -Wl,-z,relro -Wl,-z,now" \
    --add-dynamic-module="$here" \
    --builddir="$work/objs" > "$work/configure.log" 2>&1 || {
    tail -20 "$work/configure.log" >&2
    exit 1
}
make -s -f "$work/objs/Makefile" modules > "$work/make.log" 2>&1 || {
    cat "$work/make.log" >&2
    exit 1
}
install -m 0644 "$work/objs/ngx_http_keyscope_module.so" "$out/ngx_http_keyscope_module.so"
install -m 0644 "$KEYSCOPE_LIB_DIR/libkeyscope.so" "$out/libkeyscope.so"
echo "$out/ngx_http_keyscope_module.so"
