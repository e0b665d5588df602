#!/usr/bin/env bash
# Builds the keyscope Debian package:
#
#   packaging/build-deb.sh            # -> target/debian/keyscope_VERSION-1_amd64.deb
#
# It builds keyscope and libkeyscope in release, generates the man pages and
# the bash, zsh and fish completions from the binary's own clap definitions
# (`keyscope man --dir`, `keyscope completions SHELL`), builds the native
# nginx module against this machine's nginx (nginx-dev), then packs it all
# with cargo-deb, by the metadata in host/cli/Cargo.toml.
#
# Needs: cargo-deb (`cargo install cargo-deb`), nginx-dev, gcc, make.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# cargo finds its subcommands in $CARGO_HOME/bin as well as on PATH.
cargo deb --version >/dev/null 2>&1 || {
    echo "build-deb.sh: needs cargo-deb: cargo install --locked cargo-deb" >&2
    exit 2
}
cargo build --release -q -p keyscope -p keyscope-embed --bin keyscope --lib
bin=$root/target/release
stage=$bin/keyscope-package
rm -rf "$stage"
mkdir -p "$stage/man" "$stage/completions"

# Man pages, one per command, compressed as Debian keeps them.
"$bin/keyscope" man --dir "$stage/man" >/dev/null
gzip -9n "$stage"/man/*.1
"$bin/keyscope" completions bash >"$stage/completions/keyscope"
"$bin/keyscope" completions zsh >"$stage/completions/_keyscope"
"$bin/keyscope" completions fish >"$stage/completions/keyscope.fish"

# The native nginx module, for the nginx this machine builds against; it
# finds libkeyscope.so in /usr/lib/keyscope, where the package puts it.
KEYSCOPE_LIB_DIR=$bin KEYSCOPE_RPATH=/usr/lib/keyscope \
    bash integrations/nginx-module/build.sh "$stage/nginx-module" >/dev/null
echo "load_module /usr/lib/nginx/modules/ngx_http_keyscope_module.so;" >"$stage/mod-http-keyscope.conf"
rm -f "$root"/target/debian/keyscope_*.deb
cargo deb -p keyscope --no-build --output "$root/target/debian/"
