#!/usr/bin/env bash
# Checks the keyscope Debian package the way an operator meets it, on this
# machine (as root; .ci/run runs it):
#   lintian; dpkg -i; the getting-started commands as the `keyscope` user
#   with /usr/bin/keyscope and the packaged config; the packaged units
#   verified and their exposure scored (systemd-analyze); man pages,
#   completions and the nginx module; an edited config kept through a
#   reinstall; dpkg -r keeps state and config, dpkg -P removes them.
# The package is purged again at the end, whatever happened.
#
#   packaging/test-deb.sh target/debian/keyscope_*.deb
set -euo pipefail
deb=${1:?usage: test-deb.sh PACKAGE.deb}
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "test-deb.sh: $*" >&2; exit 1; }
say() { echo "== $*"; }
[ "$(id -u)" = 0 ] || fail "run as root: it installs the package"
# It purges what it installed: never run it where keyscope is in use.
if dpkg-query -W keyscope >/dev/null 2>&1 || [ -e /var/lib/keyscope ] || [ -e /etc/keyscope ]; then
    fail "keyscope is installed here, or /var/lib/keyscope or /etc/keyscope exists: not touching them"
fi
work=$(mktemp -d -t keyscope-deb.XXXXXX)
chmod 755 "$work"
server=
installed=
cleanup() {
    [ -z "$server" ] || kill "$server" 2>/dev/null || true
    [ ! -f "$work/nginx/nginx.pid" ] || nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -s quit 2>/dev/null || true
    [ -z "$installed" ] || dpkg -P keyscope >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
as_keyscope() { runuser -u keyscope -- env KEYSCOPE_STORE=/var/lib/keyscope/keyscope.db "$@"; }

say "lintian"
lintian --fail-on error,warning "$deb" | tee "$work/lintian.txt" || fail "lintian: $(cat "$work/lintian.txt")"

say "dpkg -i"
installed=1
dpkg -i "$deb" >/dev/null
getent passwd keyscope | grep -q ':/var/lib/keyscope:/usr/sbin/nologin$' || fail "no keyscope system user"
[ "$(stat -c '%U:%G %a' /var/lib/keyscope)" = "keyscope:keyscope 751" ] ||
    fail "/var/lib/keyscope is $(stat -c '%U:%G %a' /var/lib/keyscope)"
dpkg-query -W -f='${Conffiles}\n' keyscope | grep -q '/etc/keyscope/config.toml' ||
    fail "config.toml is not a conffile"

say "getting started, as the keyscope user, with /usr/bin/keyscope"
[ "$(command -v keyscope)" = /usr/bin/keyscope ] || fail "keyscope is $(command -v keyscope)"
as_keyscope keyscope scope create --app acme --name viewer --agents view >/dev/null
key=$(as_keyscope keyscope key create --scope acme/viewer --name first 2>/dev/null)
echo "$key" | as_keyscope keyscope eval --key-stdin --app acme --op agents.list | grep -q allow ||
    fail "eval did not allow the new key"
if echo "$key" | as_keyscope keyscope eval --key-stdin --app acme --op agents.delete >/dev/null; then
    fail "eval allowed a view key to delete"
fi
[ "$(stat -c '%a' /var/lib/keyscope/keyscope.db)" = 600 ] ||
    fail "the store is mode $(stat -c '%a' /var/lib/keyscope/keyscope.db)"

[ "$(stat -c '%U' /var/lib/keyscope/keyscope.db)" = keyscope ] ||
    fail "the store is $(stat -c '%U' /var/lib/keyscope/keyscope.db)'s"

say "docs/getting-started.md as installed, every command as shown, as the keyscope user"
guide=/usr/share/doc/keyscope/docs/getting-started.md
[ -f "$guide" ] || fail "no $guide"
install -d -o keyscope -g keyscope -m 700 "$work/guide"
awk '/^```sh$/ {f = 1; next} /^```$/ {f = 0} f' "$guide" >"$work/guide.sh"
grep -q 'keyscope serve' "$work/guide.sh" || fail "the guide's commands were not found"
chmod 644 "$work/guide.sh"
(cd "$work/guide" && timeout 120 runuser -u keyscope -- bash --norc --noprofile -c \
    "set -euo pipefail; trap 'kill \$(jobs -p) 2>/dev/null || true' EXIT; . '$work/guide.sh'") \
    >"$work/guide.out" 2>&1 || fail "the getting-started guide failed: $(tail -5 "$work/guide.out")"
grep -q 'allow: allowed' "$work/guide.out" || fail "the guide allowed nothing: $(cat "$work/guide.out")"

say "keyscope serve --config /etc/keyscope/config.toml, as the keyscope user"
runuser -u keyscope -- env KEYSCOPE_STORE=/var/lib/keyscope/keyscope.db \
    /usr/bin/keyscope serve --config /etc/keyscope/config.toml \
    >"$work/serve.out" 2>"$work/serve.err" &
server=$!
for _ in $(seq 600); do grep -q '"ready"' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
grep -q '"ready"' "$work/serve.out" || fail "serve never said ready: $(cat "$work/serve.err")"
check=$(curl -s -X POST http://127.0.0.1:8080/v1/check \
    -d "{\"key\":\"$key\",\"app\":\"acme\",\"op\":\"agents.list\"}")
echo "$check" | grep -q '"allow":true' || fail "/v1/check: $check"
kill -TERM "$server"; wait "$server" || true; server=

say "systemd units"
for unit in keyscope.service keyscope-gateway@.service; do
    [ -f "/usr/lib/systemd/system/$unit" ] || fail "no /usr/lib/systemd/system/$unit"
done
mkdir "$work/units"
cp /usr/lib/systemd/system/keyscope.service "$work/units/"
cp /usr/lib/systemd/system/keyscope-gateway@.service "$work/units/keyscope-gateway@edge-1.service"
for unit in "$work"/units/*; do
    systemd-analyze verify "$unit" >"$work/verify.txt" 2>&1 ||
        fail "systemd-analyze verify $(basename "$unit"): $(cat "$work/verify.txt")"
    [ ! -s "$work/verify.txt" ] || fail "systemd-analyze verify $(basename "$unit"): $(cat "$work/verify.txt")"
    # Exposure on systemd's scale of 0 to 10: 2.0 and under is "OK".
    systemd-analyze security --offline=true --threshold=20 "$unit" >"$work/security.txt" 2>&1 ||
        fail "$(basename "$unit") is too exposed: $(tail -1 "$work/security.txt")"
    echo "$(basename "$unit"): $(tail -1 "$work/security.txt")"
done

say "man pages and completions"
MANPAGER=cat MANWIDTH=80 man -l /usr/share/man/man1/keyscope-key-create.1.gz | grep -q -- '--expires-in' ||
    fail "man -l keyscope-key-create"
bash --norc --noprofile -c 'source /usr/share/bash-completion/completions/keyscope && complete -p keyscope' |
    grep -q _keyscope || fail "the bash completion does not load"
[ -s /usr/share/zsh/vendor-completions/_keyscope ] && [ -s /usr/share/fish/vendor_completions.d/keyscope.fish ] ||
    fail "no zsh or fish completion"

say "the packaged nginx module decides in nginx's workers"
# Exported by the service's user where nginx's workers (www-data), and no
# one else, may read.
[ "$(stat -c '%U:%G %a' /var/lib/keyscope/export)" = "keyscope:www-data 750" ] ||
    fail "/var/lib/keyscope/export is $(stat -c '%U:%G %a' /var/lib/keyscope/export)"
as_keyscope keyscope snapshot export -o /var/lib/keyscope/export/snapshot.ks >/dev/null
printf 'snapshot = "%s"\n' /var/lib/keyscope/export/snapshot.ks >"$work/embedded.toml"
runpath=$(readelf -d /usr/lib/nginx/modules/ngx_http_keyscope_module.so | sed -n 's/.*runpath: \[\(.*\)\]/\1/p')
[ "$runpath" = /usr/lib/keyscope ] ||
    fail "the module's runpath: $runpath"
mkdir "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
user www-data;
include /usr/share/nginx/modules-available/mod-http-keyscope.conf;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keyscope_config $work/embedded.toml;
    server { listen 127.0.0.1:18099; location / { keyscope on; empty_gif; } }
}
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" || fail "nginx: $(cat "$work/nginx/error.log")"
code() { curl -s -o /dev/null -w '%{http_code}' "$@" http://127.0.0.1:18099/api/v2/apps/acme/agents; }
allowed=; for _ in $(seq 100); do allowed=$(code -H "x-api-key: $key" || true); [ "$allowed" = 200 ] && break; sleep 0.1; done
denied=$(code || true)
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -s quit 2>/dev/null
rm -f "$work/nginx/nginx.pid"
[ "$allowed/$denied" = 200/401 ] || fail "nginx with the module: $allowed with the key, $denied without; $(cat "$work/nginx/error.log")"
[ -f /usr/include/keyscope.h ] && [ -f /usr/share/keyscope/lua/keyscope.lua ] || fail "no header or Lua file"

say "an edited config survives a reinstall"
echo '# edited by the operator' >>/etc/keyscope/config.toml
dpkg -i --force-confold "$deb" >/dev/null
grep -q 'edited by the operator' /etc/keyscope/config.toml || fail "the edited config was replaced"
[ -s /var/lib/keyscope/keyscope.db ] || fail "the store did not survive a reinstall"

say "dpkg -r keeps the state and the config; dpkg -P removes them"
files=$(dpkg -L keyscope | grep -v '^/etc/keyscope' | while read -r f; do [ -d "$f" ] || echo "$f"; done)
dpkg -r keyscope >/dev/null
for f in $files; do [ ! -e "$f" ] || fail "dpkg -r left $f"; done
[ -f /etc/keyscope/config.toml ] || fail "dpkg -r removed the config"
[ -s /var/lib/keyscope/keyscope.db ] || fail "dpkg -r removed the store"
dpkg -P keyscope >/dev/null
[ ! -e /etc/keyscope ] || fail "dpkg -P left /etc/keyscope: $(ls -A /etc/keyscope)"
[ ! -e /var/lib/keyscope ] || fail "dpkg -P left /var/lib/keyscope"
! dpkg-query -W keyscope >/dev/null 2>&1 || fail "dpkg still knows keyscope"
say "the package passed"
