#!/usr/bin/env bash
# Checks conformance/python/verify_bundle.py, a bundle verifier written from
# docs/fleet.md ("The bundle format, byte for byte") alone, against the
# bundles keyscope really writes: a static full bundle (`bundle build`), a
# control plane's served full bundles and deltas (`serve
# --bundle-signing-key`, fetched as a gateway polls), and a gateway's cache
# files (`serve --bundle-url --bundle-cache`). The verifier must accept every
# good bundle, and refuse every damaged one with the kind the specification
# names. Prints one line per case; exits 1 if any case goes otherwise.
#
#   KEYSCOPE=target/debug/keyscope conformance/bundles.sh
#
# Everything runs in a temporary directory, removed at the end, on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
keyscope=${KEYSCOPE:-$root/target/debug/keyscope}
case $keyscope in /*) ;; *) keyscope=$PWD/$keyscope ;; esac
venv=$root/target/conformance/venv
py=$venv/bin/python
verifier=$here/python/verify_bundle.py

[ -x "$py" ] || python3 -m venv "$venv"
"$py" -c 'import cryptography' 2>/dev/null ||
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"

tmp=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"
umask 077
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ beside the verifier

ks() { "$keyscope" --store "$tmp/store.db" "$@"; }
die() {
    echo "bundles: $*" >&2
    for f in cp.err gw.err; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
    exit 1
}
# manifest FILE FIELD: a field of a bundle's manifest (`snapshot.sha256`).
manifest() {
    "$py" - "$1" "$2" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack_from("<I", data, 9)[0]
value = json.loads(data[13:13 + n])
for name in sys.argv[2].split("."):
    value = value[name]
print(value)
PY
}
# wait_for CMD...: retry CMD for up to 15 s.
wait_for() {
    local i
    for i in $(seq 150); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- the store
# Files are named by the state they hold: 5, the store as first built; 6,
# after a key's revocation; 7, after scope changes; 8, after a catalogue
# change (the revisions themselves are higher: each command moves one).
ks scope create --app acme --name ops --agents view --runtime run >/dev/null 2>&1
ks scope create --app beta --name ro --agents full --runtime session-create,document-upload >/dev/null 2>&1
ks key create --scope acme/ops --name k1 >>secrets.txt 2>&1
ks key create --scope acme/ops --name k2 >>secrets.txt 2>&1
ks key create --scope beta/ro --name k3 --expires-in 30d >>secrets.txt 2>&1
# Enough keys that a whole catalogue's JSON is under half the snapshot, so
# that a catalogue change comes as a delta.
for scope in many more; do
    ks scope create --app bulk --name $scope --agents view >/dev/null 2>&1
    for i in $(seq 30); do ks key create --scope bulk/$scope --name "k$i" >>secrets.txt 2>&1; done
done
pub=$(ks bundle keygen -o sign.key 2>/dev/null)
other_pub=$(ks bundle keygen -o other.key 2>/dev/null)
echo "$pub" >sign.pub
echo "$other_pub" >other.pub
ks fleet token create --gateway edge-1 2>/dev/null | head -1 >edge-1.token
ks fleet token create --gateway edge-2 2>/dev/null | head -1 >edge-2.token
token=$(cat edge-1.token)
ks snapshot export -o snap5.snapshot >/dev/null 2>&1
ks bundle build --signing-key sign.key -o static5 >/dev/null 2>&1
ks bundle build --signing-key other.key -o other5 >/dev/null 2>&1

# ---------------------------------------------- a control plane and a gateway
# Started as the binary itself, not through the ks function: $! must be the
# server's own process id, or the trap would kill a subshell and leave it.
"$keyscope" --store "$tmp/store.db" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --bundle-signing-key sign.key --poll-ms 50 >cp.out 2>cp.err &
pids+=($!)
wait_for grep -q '"event":"listening"' cp.out || die "the control plane did not start"
admin=$("$py" -c 'import json,sys
for line in open(sys.argv[1]):
    event = json.loads(line)
    if event.get("event") == "listening":
        print(event["admin"]); break' cp.out)
case $admin in 127.0.0.1:*) ;; *) die "the admin listener is on '$admin', not 127.0.0.1" ;; esac

"$keyscope" serve --listen 127.0.0.1:0 --bundle-url "http://$admin/v1/bundle" \
    --bundle-public-key sign.pub --fleet-token-file edge-2.token --gateway-id edge-2 \
    --bundle-cache gw >gw.out 2>gw.err &
pids+=($!)

# fetch OUT [QUERY]: poll as a gateway does (docs/fleet.md, The HTTP protocol).
fetch() {
    local status
    status=$(curl -sS -o "$1" -D "$1.headers" -w '%{http_code}' \
        -H "Authorization: Bearer $token" -A keyscope-gateway \
        "http://$admin/v1/bundle?gateway=edge-1&wait=0${2:-}")
    [ "$status" = 200 ] || die "GET /v1/bundle${2:-} answered $status: $(cat "$1")"
}
held() { # the query naming what a bundle (or cache) holds
    echo "&version=$(manifest "$1" version)&revision=$(manifest "$1" revision)&snapshot=$(manifest "$1" snapshot.sha256)&module=$(manifest "$1" module.sha256)"
}

fetch full5.ksb
wait_for test -s gw/bundle.cache || die "the gateway wrote no cache"
mkdir c5 c6
cp gw/bundle.cache c5/bundle.cache
[ "$(manifest c5/bundle.cache revision)" = "$(manifest full5.ksb revision)" ] ||
    die "the gateway's first cache is not the served full bundle's state"

ks key revoke 2 >/dev/null 2>&1
gateway_moved() { ! cmp -s gw/bundle.cache c5/bundle.cache; }
wait_for gateway_moved || die "the gateway did not take the revocation"
cp gw/bundle.cache c6/bundle.cache
fetch delta6.ksb "$(held full5.ksb)"
grep -qi '^keyscope-bundle-kind: delta' delta6.ksb.headers || die "the control plane sent no delta"
fetch full6.ksb
fetch empty6.ksb "&version=0&revision=$(manifest delta6.ksb revision)&snapshot=$(manifest delta6.ksb snapshot.sha256)&module=$(manifest delta6.ksb module.sha256)"
ks snapshot export -o snap6.snapshot >/dev/null 2>&1
ks bundle build --signing-key sign.key -o static6 >/dev/null 2>&1

# More changes: a scope and a key created, a scope changed, a scope deleted
# with its keys revoked (a deleted slot, an app gone); then the catalogue.
# fetch_state OUT QUERY DIGEST: poll until the control plane has published
# the store's state whose snapshot digest is DIGEST.
fetch_state() {
    local i
    for i in $(seq 100); do
        fetch "$1" "$2"
        [ "$(manifest "$1" snapshot.sha256)" = "$3" ] && return 0
        sleep 0.1
    done
    die "the control plane did not publish $3"
}
exported() { ks --json snapshot export -o "$1" 2>/dev/null | "$py" -c 'import json,sys; print(json.load(sys.stdin)["digest"])'; }
ks scope create --app gamma --name x --agents edit --runtime run,session-terminate >/dev/null 2>&1
ks key create --scope gamma/x --name k4 >>secrets.txt 2>&1
ks scope update acme/ops --agents full --runtime "" >/dev/null 2>&1
ks scope delete beta/ro --revoke-keys >/dev/null 2>&1
fetch_state delta7.ksb "$(held c6/bundle.cache)" "$(exported snap7.snapshot)"
fetch from5-7.ksb "$(held full5.ksb)"
ks op set custom.thing runtime:session-create >/dev/null 2>&1
ks route set POST '/x/{app}/thing/{id}' custom.thing >/dev/null 2>&1
fetch_state catalogue8.ksb "$(held delta7.ksb)" "$(exported snap8.snapshot)"
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
pids=()
[ "$(manifest c6/bundle.cache kind)" = delta ] || die "the gateway's second cache is not a delta's"

# ---------------------------------------------------------- damaged bundles
"$py" - "$here/python" <<'PY'
import hashlib, json, struct, sys
sys.path.insert(0, sys.argv[1])
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
import make_snapshot
import verify_bundle as vb

seed = bytes.fromhex(open("sign.key").read().split("ed25519:")[1].strip())
signer = Ed25519PrivateKey.from_private_bytes(seed)

def split(path):
    data = open(path, "rb").read()
    n = struct.unpack_from("<I", data, 9)[0]
    return data, data[13:13 + n], data[13 + n:77 + n], data[77 + n:]

def write(path, data):
    open(path, "wb").write(data)

def flip(path, out, offset):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    write(out, bytes(data))

def bundle(manifest, parts):
    """A bundle of this manifest (a dict, or its bytes) and parts, well signed."""
    raw = manifest if isinstance(manifest, bytes) else \
        json.dumps(manifest, separators=(",", ":")).encode()
    signature = signer.sign(vb.CONTEXT + raw)
    return b"KSBUNDLE\x02" + struct.pack("<I", len(raw)) + raw + signature + parts

full, fm, fsig, fparts = split("full5.ksb")
m = json.loads(fm)
snap = fparts[:m["snapshot"]["bytes"]]
module = fparts[m["snapshot"]["bytes"]:]
head = 77 + len(fm)

# The operator's damage: one byte flipped here and there, cut, extended.
flip("full5.ksb", "middle.ksb", len(full) // 2)
flip("full5.ksb", "sig-r.ksb", 13 + len(fm) + 10)
flip("full5.ksb", "sig-s.ksb", 13 + len(fm) + 40)
digit = 13 + fm.index(b'"version":') + len(b'"version":') + 5
data = bytearray(full); data[digit] = ord("0") + (data[digit] - ord("0") + 1) % 10
write("manifest-digit.ksb", bytes(data))
flip("full5.ksb", "manifest-json.ksb", 13 + fm.index(b":"))
flip("full5.ksb", "snapshot-part.ksb", head + 100)
flip("full5.ksb", "module-part.ksb", len(full) - 1)
delta, dm, dsig, dparts = split("delta6.ksb")
flip("delta6.ksb", "changes-part.ksb", 77 + len(dm) + 20)
write("zero-sig.ksb", full[:13 + len(fm)] + bytes(64) + fparts)
write("truncated.ksb", full[:-1])
write("head-only.ksb", full[:head])
write("cut-in-head.ksb", full[:13 + len(fm) // 2])
write("twelve.ksb", full[:12])
write("trailing.ksb", full + b"\0")
write("format3.ksb", full[:8] + b"\x03" + full[9:])

# Well signed, badly made: the signing key's holder (or a buggy producer).
dmf = json.loads(dm)
changes = json.loads(dparts)
changes["keys"][0]["revoked"] = False
raw = json.dumps(changes, separators=(",", ":")).encode()
dmf2 = dict(dmf, delta={"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)})
write("mismatch.ksb", bundle(dmf2, raw))

base = vb.decode_snapshot(snap)
other = next(k for k in base["keys"] if k["id"] != changes["keys"][0]["id"])
stolen = dict(changes["keys"][0], digest=list(bytes.fromhex(other["sha256"])))
raw = json.dumps({"scopes": [], "keys": [stolen], "catalogue": None}, separators=(",", ":")).encode()
write("stolen-digest.ksb", bundle(dict(dmf, delta={"sha256": hashlib.sha256(raw).hexdigest(),
                                                  "bytes": len(raw)}), raw))
raw = b'{"scopes":[],"keys":[],"catalogue":null,"extra":1}'
write("changes-extra.ksb", bundle(dict(dmf, delta={"sha256": hashlib.sha256(raw).hexdigest(),
                                                  "bytes": len(raw)}), raw))
write("delta-no-base.ksb", bundle({k: v for k, v in dmf.items() if k != "base"}, dparts))
write("delta-no-delta.ksb", bundle({k: v for k, v in dmf.items() if k != "delta"}, b""))

write("extra-field.ksb", bundle(fm[:-1] + b',"extra":1}', fparts))
write("twice.ksb", bundle(fm[:-1] + b',"revision":1}', fparts))
rev = b'"revision":%d' % m["revision"]
write("fraction.ksb", bundle(fm.replace(rev, rev + b".0"), fparts))
write("huge.ksb", bundle(dict(m, module=dict(m["module"], bytes=2**31)), fparts))
write("no-module.ksb", bundle(dict(m, module=dict(m["module"], included=False)), snap))

def with_snapshot(new):
    return bundle(dict(m, snapshot={"sha256": new[-32:].hex(), "bytes": len(new)}), new + module)

bad = json.loads(json.dumps(base))
live = next(k for k in bad["keys"] if not k["revoked"])
live["scope_id"] = 999  # a live key in a scope that is no more
write("live-in-deleted.ksb", with_snapshot(make_snapshot.encode(bad)))
# An app that no live scope has, after the last: refused by section 4.
body = bytearray(snap[16:-32])
apps = struct.unpack_from("<I", body, 0)[0]
pos = 4
for _ in range(apps):
    pos += 2 + struct.unpack_from("<H", body, pos)[0]
struct.pack_into("<I", body, 0, apps + 1)
body[pos:pos] = make_snapshot.string("~unused")
header = b"KEYSCOPE" + struct.pack("<HHI", 5, 0, len(body))
write("not-canonical.ksb", with_snapshot(header + bytes(body) + make_snapshot.seal(header, body)))

# A signature with S + L for S: the same signature for a lax verifier.
s = int.from_bytes(fsig[32:], "little") + vb.L
write("s-plus-l.ksb", full[:13 + len(fm)] + fsig[:32] + s.to_bytes(32, "little") + fparts)
PY

# ----------------------------------------------------------------- the cases
# Each case is a line of cases.txt (its fields joined by US, 0x1f), run by
# one Python process that calls the verifier's main() with the case's
# arguments, as its command line would, and checks its exit status and
# output: a process per case would cost a Python start each (a few run as
# real processes at the end).
accept() { # accept NAME STATUS BUNDLE ARGS...: exit 0, with this status
    printf 'accept' >>cases.txt
    printf '\x1f%s' "$@" >>cases.txt
    printf '\n' >>cases.txt
}
refuse() { # refuse NAME KIND BUNDLE ARGS...: exit 1, refused as KIND
    printf 'refuse' >>cases.txt
    printf '\x1f%s' "$@" >>cases.txt
    printf '\n' >>cases.txt
}
section() { printf 'section\x1f%s\n' "$1" >>cases.txt; }
key=(--public-key sign.pub)
r5=$(manifest full5.ksb revision)
r6=$(manifest full6.ksb revision)
v6=$(manifest delta6.ksb version)
exp5=$(manifest full5.ksb expires_at_ms)

section "good bundles"
accept "static full (bundle build)" new static5/bundle.ksb "${key[@]}"
accept "served full" new full5.ksb "${key[@]}"
accept "served full, key given as a string" new full5.ksb --public-key "$pub"
accept "served full, a second after it was signed" new full5.ksb "${key[@]}" --now $((exp5 - 1))
accept "served full at state 6" new full6.ksb "${key[@]}" --base full5.ksb
accept "delta, base: the served full" new delta6.ksb "${key[@]}" --base full5.ksb
accept "delta, base: the static full (older version)" new delta6.ksb "${key[@]}" --base static5/bundle.ksb
accept "delta, base: the snapshot and its revision" new delta6.ksb "${key[@]}" --base snap5.snapshot --held-revision "$r5"
accept "delta, base: the gateway's cache of state 5" new delta6.ksb "${key[@]}" --base c5/bundle.cache
accept "delta, no base (result unchecked, says so)" unchecked delta6.ksb "${key[@]}"
accept "delta, base: the cache that took it (nothing new)" held delta6.ksb "${key[@]}" --base c6/bundle.cache
accept "empty-changes delta, base: snapshot of state 6" new empty6.ksb "${key[@]}" --base snap6.snapshot --held-revision "$r6"
accept "empty-changes delta, base: cache of state 6" held empty6.ksb "${key[@]}" --base c6/bundle.cache
accept "static full of state 6 over the cache: a renewal" renewal static6/bundle.ksb "${key[@]}" --base c6/bundle.cache
accept "delta of scope changes, base: cache of state 6" new delta7.ksb "${key[@]}" --base c6/bundle.cache
accept "delta of scope changes, base: snapshot of state 6" new delta7.ksb "${key[@]}" --base snap6.snapshot --held-revision "$r6"
accept "a catalogue change ($(manifest catalogue8.ksb kind)), base: snapshot of state 7" new catalogue8.ksb "${key[@]}" --base snap7.snapshot --held-revision "$(manifest delta7.ksb revision)"
accept "changes folded from state 5 ($(manifest from5-7.ksb kind)), base: served full" new from5-7.ksb "${key[@]}" --base full5.ksb
accept "gateway cache of a full bundle" new c5/bundle.cache "${key[@]}"
accept "gateway cache of a delta" new c6/bundle.cache "${key[@]}"
accept "gateway cache, expired (taken all the same)" new c6/bundle.cache "${key[@]}" --now $((exp5 + 10000000))
accept "another key's bundle, during a rotation" new other5/bundle.ksb "${key[@]}" --next-public-key other.pub
accept "a module not carried, the held one's" new no-module.ksb "${key[@]}" --held-module "$(manifest full5.ksb module.sha256)"

section "damaged bundles"
refuse "one byte flipped in the middle" tampered middle.ksb "${key[@]}"
refuse "one byte flipped in the signature's R" bad-signature sig-r.ksb "${key[@]}"
refuse "one byte flipped in the signature's S" bad-signature sig-s.ksb "${key[@]}"
refuse "one digit changed in the manifest" bad-signature manifest-digit.ksb "${key[@]}"
refuse "one byte flipped in the manifest's JSON" malformed manifest-json.ksb "${key[@]}"
refuse "one byte flipped in the snapshot part" tampered snapshot-part.ksb "${key[@]}"
refuse "one byte flipped in the module part" tampered module-part.ksb "${key[@]}"
refuse "one byte flipped in a delta's changes" tampered changes-part.ksb "${key[@]}" --base full5.ksb
refuse "signed by another key" other-signer other5/bundle.ksb "${key[@]}"
refuse "the trusted key's bundle, after rotating to another" other-signer full5.ksb --public-key other.pub
refuse "unsigned: a raw snapshot" unsigned snap5.snapshot "${key[@]}"
refuse "unsigned: a zeroed signature" unsigned zero-sig.ksb "${key[@]}"
refuse "truncated by one byte" malformed truncated.ksb "${key[@]}"
refuse "truncated to its head" malformed head-only.ksb "${key[@]}"
refuse "truncated inside its manifest" malformed cut-in-head.ksb "${key[@]}"
refuse "truncated to 12 bytes" malformed twelve.ksb "${key[@]}"
refuse "one byte after its end" tampered trailing.ksb "${key[@]}"
refuse "format 3" malformed format3.ksb "${key[@]}"
refuse "an old version, a newer one held" rollback full5.ksb "${key[@]}" --held-version "$v6"
refuse "an older bundle of the held state" rollback static5/bundle.ksb "${key[@]}" --base full5.ksb
refuse "state 5 over the cache of state 6" rollback full5.ksb "${key[@]}" --base c6/bundle.cache
refuse "a lower revision at a higher version" rollback full5.ksb "${key[@]}" --held-version 1 --held-revision "$r6"
refuse "expired: now is its expiry" expired full5.ksb "${key[@]}" --now "$exp5"
refuse "expired: an hour later" expired delta6.ksb "${key[@]}" --base full5.ksb --now $((exp5 + 3600000))
refuse "a delta on the wrong base (state 6's snapshot)" wrong-base delta6.ksb "${key[@]}" --base snap6.snapshot --held-revision "$r6"
refuse "a delta on the wrong base (snapshot alone)" wrong-base delta6.ksb "${key[@]}" --base snap6.snapshot
refuse "a delta on the wrong base's revision" wrong-base delta6.ksb "${key[@]}" --base snap5.snapshot --held-revision $((r5 - 1))
refuse "a signed delta whose result is not its digest" delta-mismatch mismatch.ksb "${key[@]}" --base full5.ksb
refuse "a delta giving a key another key's digest" bad-snapshot stolen-digest.ksb "${key[@]}" --base full5.ksb
refuse "a delta's changes with a field too many" malformed changes-extra.ksb "${key[@]}" --base full5.ksb
refuse "a delta without base" malformed delta-no-base.ksb "${key[@]}"
refuse "a served delta without delta" malformed delta-no-delta.ksb "${key[@]}"
refuse "a manifest field the format does not list" malformed extra-field.ksb "${key[@]}"
refuse "a manifest field given twice" malformed twice.ksb "${key[@]}"
refuse "a manifest number with a fraction" malformed fraction.ksb "${key[@]}"
refuse "parts declared over 2 GiB" too-large huge.ksb "${key[@]}"
refuse "a module not carried, none held" malformed no-module.ksb "${key[@]}"
refuse "a live key in a deleted scope's slot" bad-snapshot live-in-deleted.ksb "${key[@]}"
refuse "an app that no live scope has" bad-snapshot not-canonical.ksb "${key[@]}"
refuse "S + L for S (a lax verifier's signature)" bad-signature s-plus-l.ksb "${key[@]}"

failures=0
"$py" - "$here/python" cases.txt <<'PY' || failures=$((failures + 1))
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[1])
import verify_bundle

failed = 0
for line in open(sys.argv[2], encoding="utf-8"):
    what, *fields = line.rstrip("\n").split("\x1f")
    if what == "section":
        print(f"== {fields[0]}")
        continue
    name, expect, argv = fields[0], fields[1], fields[2:]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = verify_bundle.main(argv + (["--json"] if what == "accept" else []))
        except SystemExit as e:
            rc = e.code
    out = out.getvalue().strip()
    if what == "accept":
        try:
            status = json.loads(out)["status"] if rc == 0 else None
        except (ValueError, KeyError):
            status = None
        good, shown = status == expect, expect
    else:
        good = rc == 1 and out.startswith(f"refused {expect} ")
        shown = out[len("refused "):]
    if good:
        print(f"ok    {what} {name:<56} {shown}")
    else:
        failed += 1
        print(f"FAIL  {what} {name:<56} expected {expect}, got (exit {rc}) {out}")
sys.exit(1 if failed else 0)
PY

echo "== the command line, as processes"
cli() { # cli NAME RC TEXT ARGS...: exits RC, and its output starts with TEXT
    local name=$1 want=$2 text=$3 out rc=0
    shift 3
    out=$("$py" "$verifier" "$@" 2>&1) || rc=$?
    if [ "$rc" = "$want" ] && [[ $out == "$text"* ]]; then
        printf 'ok    cli    %-56s exit %s\n' "$name" "$rc"
    else
        failures=$((failures + 1))
        printf 'FAIL  cli    %-56s expected exit %s and %s, got (exit %s) %s\n' "$name" "$want" "$text" "$rc" "$out"
    fi
}
cli "a served full bundle" 0 "accepted: served full bundle" full5.ksb "${key[@]}"
cli "a gateway's cache" 0 "accepted: cache delta bundle" c6/bundle.cache "${key[@]}"
cli "a delta with its base" 0 "accepted: served delta bundle" delta6.ksb "${key[@]}" --base full5.ksb
cli "a delta without its base" 0 "verified, result unchecked" delta6.ksb "${key[@]}"
cli "one byte flipped in the middle" 1 "refused tampered " middle.ksb "${key[@]}"
cli "as JSON" 1 '{"accepted": false, "kind": "rollback"' full5.ksb "${key[@]}" --held-version "$v6" --json
cli "no public key" 2 "usage:" full5.ksb
cli "a public key that is no key" 2 "verify_bundle.py: --public-key" full5.ksb --public-key ed25519:00
cli "a delta as --base" 2 "verify_bundle.py: --base" delta6.ksb "${key[@]}" --base delta6.ksb

echo "== the specification's worked example"
if "$py" - "$root/docs/fleet.md" "$here/python" <<'PY'; then
import re, sys
sys.path.insert(0, sys.argv[2])
import verify_bundle as vb
doc = open(sys.argv[1], encoding="utf-8").read()
public = bytes.fromhex(re.search(r"signed by the key\n`ed25519:([0-9a-f]{64})`", doc).group(1))
assert vb.key_id(public) == "7011d173fb6a40de"
manifests = re.findall(r'^(\{"kind":"(?:full|delta)".*\})$', doc, re.M)
rows = re.findall(r"^[0-9a-f]{6}  ((?:[0-9a-f]{2} ){16}) *signature, [RS]\n[0-9a-f]{6}  ((?:[0-9a-f]{2} ?){16})$", doc, re.M)
signatures = [bytes.fromhex((rows[i][0] + rows[i][1] + rows[i + 1][0] + rows[i + 1][1]).replace(" ", "")) for i in (0, 2)]
assert len(manifests) == 2 and len(signatures) == 2
for raw, sig in zip(manifests, signatures):
    raw = raw.encode()
    vb.parse_manifest(raw)
    assert vb.verify_strict(public, sig, vb.CONTEXT + raw) is None, "the example does not verify"
    assert vb.verify_strict(public, sig, vb.CONTEXT + raw.replace(b'"version":1', b'"version":2')) is not None
    assert vb.verify_strict(public, sig[:40] + bytes([sig[40] ^ 1]) + sig[41:], vb.CONTEXT + raw) is not None
PY
    echo "ok    the worked example's two signatures verify, and fail once changed"
else
    failures=$((failures + 1))
    echo "FAIL  the worked example in docs/fleet.md"
fi

if [ "$failures" = 0 ]; then
    echo "bundles: every case as expected"
else
    echo "bundles: FAILED (see FAIL above)"
    exit 1
fi
