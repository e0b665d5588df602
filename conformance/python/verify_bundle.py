"""A keyscope bundle verifier written from docs/fleet.md ("The bundle format,
byte for byte") and conformance/CONTRACT.md section 4 alone, with the
standard library and one Ed25519 package (`cryptography`).

    python verify_bundle.py BUNDLE --public-key KEY [--next-public-key KEY]
        [--layout served|cache] [--base FILE] [--held-version N]
        [--held-revision N] [--held-snapshot HEX] [--held-module HEX]
        [--now MS] [--json]

BUNDLE is a bundle as a control plane serves it (`GET /v1/bundle`), as
`keyscope bundle build` writes it (`bundle.ksb`), or a gateway's cache file.
The layout is `cache` when the file is named `bundle.cache`, `served`
otherwise; `--layout` says it outright (the file itself does not say).

KEY is `ed25519:` and 64 hex digits, or a file holding that on one line
(`keyscope bundle keygen` prints it). `--next-public-key` is the second key
trusted during a rotation.

The held state (what the gateway holds; check 18 and 19):
- `--base FILE`: a raw snapshot (`keyscope snapshot export`), or a bundle
  whose first part is a snapshot: a full bundle, or a gateway's cache file.
  A bundle given as base is itself checked (checks 1 to 16 and the snapshot
  checks of 19, with no expiry), and brings its `version`, `revision`,
  `snapshot.sha256` and `module.sha256` as the held state.
- `--held-version`, `--held-revision`, `--held-snapshot`, `--held-module`
  give (or override) each of them. A raw snapshot brings only its digest.
A held field left unknown is not compared (the output says what was not).

Checks run in the specification's order and stop at the first that fails.
Check 21 (the live policy's swap: compile, instantiate, self-test the
module) is a gateway's, not a verifier's: it is not run.

Exit status:
  0  accepted (`new`, a `renewal`, or `held`: the very bundle held), or a
     delta whose signature and parts verify but whose result could not be
     checked because no base was given (`unchecked`: it says so);
  1  refused, printed as `refused KIND (check N): REASON`, KIND as the
     specification names it: io, too-large, malformed, unsigned,
     other-signer, bad-signature, tampered, expired, rollback, bad-snapshot,
     wrong-base, delta-mismatch;
  2  usage error (bad arguments, an unreadable key, an unusable --base).
"""

import argparse
import hashlib
import json
import os
import stat
import struct
import sys
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_snapshot  # noqa: E402  (CONTRACT.md section 4's encoder)

MAGIC = b"KSBUNDLE"
FORMAT = 2
CONTEXT = b"keyscope-bundle/2\n"
MAX_MANIFEST = 65536
MAX_BUNDLE = 2 * 1024 * 1024 * 1024
U64_MAX = 2**64 - 1
HEX = set("0123456789abcdef")


class Refusal(Exception):
    def __init__(self, kind, check, reason):
        super().__init__(reason)
        self.kind, self.check, self.reason = kind, check, reason


class UsageError(Exception):
    pass


# ---------------------------------------------------------------- strict JSON


class BadNumber:
    """A JSON number that is not a u64: a sign, a fraction, an exponent, or too big."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


class JObject(dict):
    """A JSON object that remembers the names it was given more than once."""

    dupes = frozenset()


def _pairs(pairs):
    obj = JObject()
    dupes = set()
    for name, value in pairs:
        if name in obj:
            dupes.add(name)
        obj[name] = value
    obj.dupes = frozenset(dupes)
    return obj


def _int(text):
    if text.startswith("-"):
        return BadNumber(text)
    value = int(text)
    return value if value <= U64_MAX else BadNumber(text)


def _constant(text):
    raise ValueError(f"{text} is not JSON")


def parse_json(raw, what):
    """RFC 8259 text in UTF-8 (no BOM), numbers kept apart when not u64."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8: {e}") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_pairs, parse_int=_int, parse_float=BadNumber,
            parse_constant=_constant,
        )
    except ValueError as e:
        raise ValueError(f"{what} is not JSON: {e}") from None
    _no_lone_surrogates(value, what)
    return value


def _no_lone_surrogates(value, what):
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{what} has a string with a lone surrogate") from None
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def is_u64(v):
    return type(v) is int and 0 <= v <= U64_MAX


def _type_name(v):
    if isinstance(v, BadNumber):
        return f"the number {v.text} (not a u64)"
    return {dict: "an object", JObject: "an object", list: "an array", str: "a string",
            bool: "a boolean", int: "an integer", type(None): "null"}.get(type(v), type(v).__name__)


# ----------------------------------------------------------------- manifest


def _exact_object(value, fields, where):
    """An object with exactly these fields, each once; fields: name -> checker."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} is {_type_name(value)}, not an object")
    if value.dupes:
        raise ValueError(f"{where} gives {sorted(value.dupes)} twice")
    extra = set(value) - set(fields)
    if extra:
        raise ValueError(f"{where} has fields the format does not list: {sorted(extra)}")
    missing = set(fields) - set(value)
    if missing:
        raise ValueError(f"{where} lacks {sorted(missing)}")
    for name, check in fields.items():
        if not check(value[name]):
            raise ValueError(f"{where}.{name} is {_type_name(value[name])}, of the wrong type")
    return value


def _is_str(v):
    return isinstance(v, str)


def _is_bool(v):
    return isinstance(v, bool)


def _part(v, where):
    return _exact_object(v, {"sha256": _is_str, "bytes": is_u64}, where)


MANIFEST_FIELDS = ["kind", "version", "expires_at_ms", "revision", "published_at_ms",
                   "signer", "snapshot", "base", "delta", "module"]


def parse_manifest(raw):
    """The manifest, read strictly (docs/fleet.md, The manifest). ValueError if not."""
    m = parse_json(raw, "the manifest")
    if not isinstance(m, dict):
        raise ValueError(f"the manifest is {_type_name(m)}, not an object")
    if m.dupes:
        raise ValueError(f"the manifest gives {sorted(m.dupes)} twice")
    extra = set(m) - set(MANIFEST_FIELDS)
    if extra:
        raise ValueError(f"the manifest has fields the format does not list: {sorted(extra)}")
    required = ["kind", "version", "expires_at_ms", "revision", "published_at_ms",
                "signer", "snapshot", "module"]
    missing = [f for f in required if f not in m]
    if missing:
        raise ValueError(f"the manifest lacks {missing}")
    if not isinstance(m["kind"], str) or m["kind"] not in ("full", "delta"):
        raise ValueError(f"kind is {m['kind']!r}, neither \"full\" nor \"delta\"")
    for name in ("version", "expires_at_ms", "revision", "published_at_ms"):
        if not is_u64(m[name]):
            raise ValueError(f"{name} is {_type_name(m[name])}, not a u64")
    if not isinstance(m["signer"], str):
        raise ValueError(f"signer is {_type_name(m['signer'])}, not a string")
    _part(m["snapshot"], "snapshot")
    _exact_object(m["module"], {"sha256": _is_str, "bytes": is_u64, "included": _is_bool}, "module")
    if m.get("base") is not None:
        _exact_object(m["base"], {"revision": is_u64, "sha256": _is_str}, "base")
    if m.get("delta") is not None:
        _part(m["delta"], "delta")
    if m["kind"] == "full":
        # "a full bundle that has them is read as if it had not"
        m.pop("base", None)
        m.pop("delta", None)
    return m


# ------------------------------------------------------------------ Ed25519

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _decode_point(enc):
    """RFC 8032 5.1.3; None if the 32 bytes are not a point's encoding."""
    y = int.from_bytes(enc, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = (u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    if (v * x * x - u) % P != 0:
        x = (x * SQRT_M1) % P
        if (v * x * x - u) % P != 0:
            return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, (x * y) % P)


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _small_order(point):
    q = point
    for _ in range(3):
        q = _add(q, q)
    x, y, z, _t = q
    return x % P == 0 and (y - z) % P == 0


def verify_strict(public, signature, message):
    """Ed25519 (RFC 8032 5.1.7, pure), with the strict rules docs/fleet.md lists:
    S below L, R a point, neither R nor A of small order, cofactorless."""
    if len(signature) != 64:
        return "the signature is not 64 bytes"
    if int.from_bytes(signature[32:], "little") >= L:
        return "S is not below the group order"
    r = _decode_point(signature[:32])
    if r is None:
        return "R does not decode as a point"
    if _small_order(r):
        return "R is of small order"
    a = _decode_point(public)
    if a is None or _small_order(a):
        return "the public key is of small order or no point"
    try:
        # OpenSSL's check is cofactorless: R == encode([S]B - [k]A), byte for byte.
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return "the signature does not verify"
    return None


def key_id(public):
    return hashlib.sha256(public).hexdigest()[:16]


def load_public_key(arg, flag):
    text = arg
    if not arg.startswith("ed25519:"):
        try:
            with open(arg, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"{flag}: {arg} is neither `ed25519:HEX` nor a readable file ({e})")
    lines = text.splitlines()
    if len(lines) != 1:
        raise UsageError(f"{flag}: a public key is one line, `ed25519:` and 64 hex digits")
    line = lines[0].strip()
    digits = line[len("ed25519:"):]
    if not line.startswith("ed25519:") or len(digits) != 64 or not set(digits) <= HEX:
        raise UsageError(f"{flag}: {line[:80]!r} is not `ed25519:` and 64 lowercase hex digits")
    public = bytes.fromhex(digits)
    if _decode_point(public) is None:
        raise UsageError(f"{flag}: {line} is not an Ed25519 point")
    return public


# ---------------------------------------------------------------- snapshots


class SnapshotError(Exception):
    def __init__(self, variant, reason):
        super().__init__(reason)
        self.variant, self.reason = variant, reason


def pattern_error(pattern):
    """CONTRACT.md section 4's rules for a route pattern; None if it keeps them."""
    if not pattern.startswith("/"):
        return "does not start with /"
    apps = 0
    for segment in pattern[1:].split("/"):
        if segment in ("", ".", ".."):
            return f"has an empty or dot segment ({segment!r})"
        if segment.startswith("{") and segment.endswith("}") and len(segment) > 2:
            name = segment[1:-1]
            if any(c in name for c in "{}/"):
                return f"has a malformed placeholder {segment!r}"
            apps += name == "app"
        elif any(c in segment for c in "{}%?#"):
            return f"has a literal segment holding one of {{ }} % ? #: {segment!r}"
    if apps != 1:
        return f"names {{app}} {apps} times, not once"
    return None


def decode_snapshot(b):
    """CONTRACT.md section 4's loading checks, in order. Returns the contents in
    make_snapshot's shape."""

    def bad(variant, reason):
        raise SnapshotError(variant, reason)

    if len(b) < 8 or b[:8] != b"KEYSCOPE":
        bad("bad-magic", "the first 8 bytes are not KEYSCOPE")
    if len(b) < 16:
        bad("truncated", "fewer than 16 bytes")
    version, reserved, n = struct.unpack_from("<HHI", b, 8)
    if version != 5:
        bad(f"unsupported-version({version})", f"format version {version}, not 5")
    if reserved != 0:
        bad("malformed", "reserved header bytes are not zero")
    if len(b) < 16 + n + 32:
        bad("truncated", f"body length {n} runs past the end")
    if len(b) > 16 + n + 32:
        bad("malformed", "trailing bytes after the trailer")
    body, pos, end = b, 16, 16 + n

    def take(size, what):
        nonlocal pos
        if pos + size > end:
            bad("malformed", f"{what} runs past the body")
        out = body[pos : pos + size]
        pos += size
        return out

    def u32(what):
        return struct.unpack("<I", take(4, what))[0]

    # 6: the framing, by counts and lengths alone, and the key records' order.
    for section, after in (("app", 0), ("operation", 2)):
        for i in range(u32(f"the {section} count")):
            take(struct.unpack("<H", take(2, f"{section} {i}"))[0] + after, f"{section} {i}")
    take(16 * u32("the scope count"), "the scopes")
    for i in range(u32("the route count")):
        take(6, f"route {i}")
        take(struct.unpack("<H", take(2, f"route {i}"))[0], f"route {i}'s pattern")
    head_end = pos
    count = u32("the key count")
    if end - pos != 64 * count:
        bad("malformed", f"{count} key records do not end exactly at the end of the body")
    records = [b[pos + 64 * i : pos + 64 * (i + 1)] for i in range(count)]
    for i in range(1, count):
        if not records[i - 1][:32] < records[i][:32]:
            bad("malformed", f"key digests not strictly ascending at record {i}")
    # 7: the digest.
    if make_snapshot.seal(b[:16], b[16:end]) != b[end:]:
        bad("digest-mismatch", "the trailer is not the digest of the header, sections and key pages")

    # 8: the sections' contents.
    pos = 16

    def string(what):
        length = struct.unpack("<H", take(2, what))[0]
        raw = take(length, what)
        if length == 0:
            bad("malformed", f"{what} is an empty string")
        try:
            return raw.decode("utf-8"), raw
        except UnicodeDecodeError:
            bad("malformed", f"{what} is not UTF-8")

    apps, prev = [], None
    for i in range(u32("the app count")):
        name, raw = string(f"app {i}")
        if prev is not None and not prev < raw:
            bad("malformed", f"apps not strictly ascending at {name!r}")
        prev = raw
        apps.append(name)

    operations, prev = [], None
    for i in range(u32("the operation count")):
        name, raw = string(f"operation {i}")
        if prev is not None and not prev < raw:
            bad("malformed", f"operations not strictly ascending at {name!r}")
        prev = raw
        kind, value = take(2, f"operation {name!r}'s requirement")
        if kind == 0 and value <= 3:
            requires = "agents:" + make_snapshot.LEVELS[value]
        elif kind == 1 and value <= 3:
            requires = "runtime:" + make_snapshot.PERMISSIONS[value]
        else:
            bad("malformed", f"operation {name!r} has requirement ({kind}, {value})")
        operations.append({"name": name, "requires": requires})

    scopes, prev = [], None
    for i in range(u32("the scope count")):
        scope_id, app, level, bits, res = struct.unpack("<QIBBH", take(16, f"scope {i}"))
        if level > 3 or bits > 15 or res != 0:
            bad("malformed", f"scope {i} has level {level}, bits {bits}, reserved {res}")
        if app >= len(apps):
            bad("malformed", f"scope {i} names app {app} of {len(apps)}")
        if prev is not None and not prev < scope_id:
            bad("malformed", f"scope ids not strictly ascending at {scope_id}")
        prev = scope_id
        scopes.append({"id": scope_id, "app": apps[app], "agents": make_snapshot.LEVELS[level],
                       "runtime": [p for bit, p in enumerate(make_snapshot.PERMISSIONS) if bits >> bit & 1]})
    live_scopes = {scope["id"] for scope in scopes}
    named = {scope["app"] for scope in scopes}
    for app in apps:
        if app not in named:
            bad("malformed", f"app {app!r} has no live scope")

    routes = []
    for i in range(u32("the route count")):
        method, res, op = struct.unpack("<BBI", take(6, f"route {i}"))
        pattern, _raw = string(f"route {i}'s pattern")
        if method > 8 or res != 0 or op >= len(operations):
            bad("malformed", f"route {i} has method {method}, reserved {res}, operation {op}")
        why = pattern_error(pattern)
        if why:
            bad("malformed", f"route {i}'s pattern {pattern!r} {why}")
        routes.append({"method": make_snapshot.METHODS[method], "pattern": pattern,
                       "op": operations[op]["name"]})
    assert pos == head_end

    # 9: the key records' contents; 10: their ids.
    keys, ids = [], set()
    for i, record in enumerate(records):
        digest, kid, not_after, scope_id, flags, res = struct.unpack("<32sQQQII", record)
        if flags & ~1 or res:
            bad("malformed", f"key record {i} has flags {flags:#x}, reserved {res}")
        revoked = bool(flags & 1)
        if not revoked and scope_id not in live_scopes:
            bad("malformed", f"live key record {i} (id {kid}) is in scope {scope_id}, which is not live")
        keys.append({"sha256": digest.hex(), "id": kid, "scope_id": scope_id,
                     "revoked": revoked,
                     "not_after": None if not_after == make_snapshot.NEVER else not_after})
    for key in keys:
        if key["id"] in ids:
            bad("malformed", f"two key records have the key id {key['id']}")
        ids.add(key["id"])
    return {"operations": operations, "scopes": scopes, "keys": keys, "routes": routes}


def encode_snapshot(contents):
    return make_snapshot.encode(contents)


# ------------------------------------------------------------------ changes

LEVEL_NAMES = {"None": "none", "View": "view", "Edit": "edit", "Full": "full"}
PERMISSION_NAMES = {"Run": "run", "SessionCreate": "session-create",
                    "SessionTerminate": "session-terminate", "DocumentUpload": "document-upload"}


def _fields(obj, where, names):
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is {_type_name(obj)}, not an object")
    dup = obj.dupes & set(names)
    if dup:
        raise ValueError(f"{where} gives {sorted(dup)} twice")
    missing = [n for n in names if n not in obj]
    if missing:
        raise ValueError(f"{where} lacks {missing}")


def parse_changes(raw):
    """The changes of a served delta, their shape (docs/fleet.md, The parts).
    ValueError if not. Returns (scopes, keys, catalogue) in make_snapshot's shape."""
    c = parse_json(raw, "the changes")
    if not isinstance(c, dict):
        raise ValueError(f"the changes are {_type_name(c)}, not an object")
    if c.dupes:
        raise ValueError(f"the changes give {sorted(c.dupes)} twice")
    extra = set(c) - {"scopes", "keys", "catalogue"}
    if extra:
        raise ValueError(f"the changes have fields the format does not allow: {sorted(extra)}")
    for name in ("scopes", "keys"):
        if not isinstance(c.get(name), list):
            raise ValueError(f"the changes' {name} is {_type_name(c.get(name))}, not an array")

    scopes = []
    for i, pair in enumerate(c["scopes"]):
        where = f"scopes[{i}]"
        if not isinstance(pair, list) or len(pair) != 2 or not is_u64(pair[0]):
            raise ValueError(f"{where} is not a pair [id, scope]")
        sid, scope = pair
        if scope is None:
            scopes.append((sid, None))
            continue
        _fields(scope, where + "[1]", ["id", "app", "agents", "runtime"])
        if not is_u64(scope["id"]) or not isinstance(scope["app"], str):
            raise ValueError(f"{where}[1] has an id or app of the wrong type")
        if not isinstance(scope["agents"], str) or scope["agents"] not in LEVEL_NAMES:
            raise ValueError(f"{where}[1].agents is {scope['agents']!r}")
        if not (type(scope["runtime"]) is int and 0 <= scope["runtime"] <= 15):
            raise ValueError(f"{where}[1].runtime is {scope['runtime']!r}, not 0 to 15")
        scopes.append((sid, {
            "id": sid, "app": scope["app"], "agents": LEVEL_NAMES[scope["agents"]],
            "runtime": [p for bit, p in enumerate(make_snapshot.PERMISSIONS)
                        if scope["runtime"] >> bit & 1],
            "declared_id": scope["id"]}))

    keys = []
    for i, key in enumerate(c["keys"]):
        where = f"keys[{i}]"
        _fields(key, where, ["digest", "id", "scope_id", "revoked", "not_after"])
        d = key["digest"]
        if not (isinstance(d, list) and len(d) == 32
                and all(type(x) is int and 0 <= x <= 255 for x in d)):
            raise ValueError(f"{where}.digest is not 32 integers 0 to 255")
        if not is_u64(key["id"]) or not is_u64(key["scope_id"]):
            raise ValueError(f"{where} has an id or scope_id that is not a u64")
        if not isinstance(key["revoked"], bool):
            raise ValueError(f"{where}.revoked is not a boolean")
        if key["not_after"] is not None and not is_u64(key["not_after"]):
            raise ValueError(f"{where}.not_after is neither a u64 nor null")
        keys.append({"sha256": bytes(d).hex(), "id": key["id"], "scope_id": key["scope_id"],
                     "revoked": key["revoked"], "not_after": key["not_after"]})

    catalogue = c.get("catalogue")
    if catalogue is not None:
        if not (isinstance(catalogue, list) and len(catalogue) == 2
                and all(isinstance(x, list) for x in catalogue)):
            raise ValueError("catalogue is neither null nor a pair [operations, routes]")
        operations, routes = [], []
        for i, op in enumerate(catalogue[0]):
            where = f"catalogue operations[{i}]"
            _fields(op, where, ["name", "requires"])
            req = op["requires"]
            if not isinstance(op["name"], str):
                raise ValueError(f"{where}.name is not a string")
            if not (isinstance(req, dict) and len(req) == 1 and not req.dupes):
                raise ValueError(f"{where}.requires is not {{\"Agents\":…}} or {{\"Runtime\":…}}")
            (tag, value), = req.items()
            if tag == "Agents" and isinstance(value, str) and value in LEVEL_NAMES:
                requires = "agents:" + LEVEL_NAMES[value]
            elif tag == "Runtime" and isinstance(value, str) and value in PERMISSION_NAMES:
                requires = "runtime:" + PERMISSION_NAMES[value]
            else:
                raise ValueError(f"{where}.requires is {{{tag!r}: {value!r}}}")
            operations.append({"name": op["name"], "requires": requires})
        for i, route in enumerate(catalogue[1]):
            where = f"catalogue routes[{i}]"
            _fields(route, where, ["method", "pattern", "op"])
            if not isinstance(route["method"], str) or route["method"] not in make_snapshot.METHODS:
                raise ValueError(f"{where}.method is {route['method']!r}")
            if not isinstance(route["pattern"], str) or not isinstance(route["op"], str):
                raise ValueError(f"{where} has a pattern or op that is not a string")
            routes.append({"method": route["method"], "pattern": route["pattern"],
                           "op": route["op"]})
        catalogue = (operations, routes)
    return scopes, keys, catalogue


def _string_ok(text):
    return 0 < len(text.encode("utf-8")) <= 0xFFFF


def apply_delta(base, changes):
    """docs/fleet.md, Applying a delta, steps 1 to 5. Returns the resulting
    snapshot's bytes; raises Refusal('bad-snapshot') at step 4."""
    scope_changes, key_changes, catalogue = changes
    scopes = {s["id"]: dict(s) for s in base["scopes"]}
    operations, routes = base["operations"], base["routes"]
    keys = {k["sha256"]: dict(k) for k in base["keys"]}

    def bad(reason):
        raise Refusal("bad-snapshot", 19, f"the delta's changes do not apply: {reason}")

    for sid, scope in scope_changes:  # 1
        if scope is None:
            scopes.pop(sid, None)
        else:
            scopes[sid] = {k: v for k, v in scope.items() if k != "declared_id"}
    if catalogue is not None:  # 2
        operations, routes = catalogue
    seen = set()
    for key in key_changes:  # 3 (and step 4's rules on the keys array)
        if key["sha256"] in seen:
            bad(f"the digest {key['sha256'][:16]}… is twice in keys")
        seen.add(key["sha256"])
        held = keys.get(key["sha256"])
        if held is not None and held["id"] != key["id"]:
            bad(f"key {key['id']} has the digest of held key {held['id']}")
        keys[key["sha256"]] = key

    # 4: the result must be valid.
    names = set()
    for op in operations:
        if not _string_ok(op["name"]):
            bad(f"operation name {op['name'][:40]!r} is empty or longer than 65,535 bytes")
        if op["name"] in names:
            bad(f"operation {op['name']!r} is twice in the catalogue")
        names.add(op["name"])
    for route in routes:
        if not _string_ok(route["pattern"]):
            bad("a route pattern is empty or longer than 65,535 bytes")
        why = pattern_error(route["pattern"])
        if why:
            bad(f"route pattern {route['pattern']!r} {why}")
        if route["op"] not in names:
            bad(f"route {route['pattern']!r} names {route['op']!r}, no catalogued operation")
    for scope in scopes.values():
        if not _string_ok(scope["app"]):
            bad(f"scope {scope['id']}'s app is empty or longer than 65,535 bytes")
    ids = {}
    for key in keys.values():
        if key["id"] in ids:
            bad(f"two keys have the id {key['id']}")
        ids[key["id"]] = key
        if not key["revoked"] and key["scope_id"] not in scopes:
            bad(f"live key {key['id']} is in scope {key['scope_id']}, which is not live")

    return encode_snapshot({"operations": operations, "scopes": list(scopes.values()),
                            "keys": list(keys.values()), "routes": routes})  # 5


# ------------------------------------------------------------------ reading


def read_file(path):
    """Check 1 for a file: opened without blocking, a regular file of at most 2 GiB."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file")
    except OSError as e:
        raise Refusal("io", 1, f"cannot open {path}: {e.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refusal("io", 1, f"{path} is not a regular file")
        if st.st_size > MAX_BUNDLE:
            raise Refusal("too-large", 1, f"{path} is {st.st_size} bytes, over 2 GiB")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise Refusal("io", 13, f"reading {path} failed: {e.strerror}")
    finally:
        os.close(fd)


def read_bundle(data, layout, trusted):
    """Checks 2 to 16. Returns a dict describing the bundle."""
    if len(data) < 13:  # 2
        raise Refusal("malformed", 2, f"{len(data)} bytes, fewer than 13")
    if data[:8] != MAGIC:  # 3
        what = " (a raw snapshot)" if data[:8] == b"KEYSCOPE" else ""
        raise Refusal("unsigned", 3, f"bytes 0 to 7 are not KSBUNDLE{what}")
    if data[8] != FORMAT:  # 4
        raise Refusal("malformed", 4, f"format {data[8]}, not 2")
    n = struct.unpack_from("<I", data, 9)[0]
    if n > MAX_MANIFEST:  # 5
        raise Refusal("malformed", 5, f"manifest length {n}, over 65,536")
    head_len = 77 + n
    if len(data) < head_len:  # 6
        raise Refusal("malformed", 6, f"{len(data)} bytes, fewer than the head's {head_len}")
    manifest_raw = data[13 : 13 + n]
    signature = data[13 + n : head_len]
    if signature == bytes(64):  # 7
        raise Refusal("unsigned", 7, "the 64 signature bytes are all zero")
    try:  # 8
        m = parse_manifest(manifest_raw)
    except ValueError as e:
        raise Refusal("malformed", 8, str(e))
    public = trusted.get(m["signer"])  # 9
    if public is None:
        raise Refusal("other-signer", 9,
                      f"signer {m['signer'][:40]!r} is not the id of a trusted key "
                      f"({', '.join(sorted(trusted))})")
    why = verify_strict(public, signature, CONTEXT + manifest_raw)  # 10
    if why:
        raise Refusal("bad-signature", 10, f"{why}, under key {m['signer']}")
    if layout == "served" and m["kind"] == "delta" and m.get("delta") is None:  # 11
        raise Refusal("malformed", 11, "a served delta without `delta`")

    module_len = m["module"]["bytes"]
    if layout == "cache":
        first_len, second_len = m["snapshot"]["bytes"], module_len
    else:
        first = m["snapshot"] if m["kind"] == "full" else m["delta"]
        first_len = first["bytes"]
        second_len = module_len if m["module"]["included"] else 0
    parts_len = first_len + second_len
    if head_len + parts_len > MAX_BUNDLE:  # 12
        raise Refusal("too-large", 12, f"77+N+P = {head_len + parts_len} bytes, over 2 GiB")
    have = len(data) - head_len
    if have < parts_len:  # 13
        raise Refusal("malformed", 13, f"{have} bytes follow the head, fewer than P = {parts_len}")
    if have > parts_len:
        raise Refusal("tampered", 13, f"{have - parts_len} byte(s) follow the parts")

    if m["kind"] == "delta" and m.get("base") is None:  # 14
        raise Refusal("malformed", 14, "a delta without `base`")
    first_part = data[head_len : head_len + first_len]
    module = data[head_len + first_len :]
    snapshot, changes = None, None
    if layout == "cache" or m["kind"] == "full":  # 15
        snapshot = first_part
        if len(snapshot) < 32:
            raise Refusal("tampered", 15, f"a snapshot of {len(snapshot)} bytes, under 32")
        trailer = snapshot[-32:].hex()
        if trailer != m["snapshot"]["sha256"]:
            raise Refusal("tampered", 15, f"the snapshot's trailer {trailer} is not snapshot.sha256")
        try:
            sealed = make_snapshot.seal(snapshot[:16], snapshot[16:-32]).hex()
        except (struct.error, IndexError):
            sealed = None
        if sealed != trailer:
            raise Refusal("tampered", 15, "the snapshot's trailer is not the digest of its bytes")
    else:
        digest = hashlib.sha256(first_part).hexdigest()
        if digest != m["delta"]["sha256"]:
            raise Refusal("tampered", 15, f"the changes' SHA-256 {digest} is not delta.sha256")
        try:
            changes = parse_changes(first_part)
        except ValueError as e:
            raise Refusal("malformed", 15, str(e))
    carried = len(module) > 0  # 16
    if carried:
        digest = hashlib.sha256(module).hexdigest()
        if digest != m["module"]["sha256"]:
            raise Refusal("tampered", 16, f"the module's SHA-256 {digest} is not module.sha256")
    return {"manifest": m, "layout": layout, "head_len": head_len, "size": len(data),
            "snapshot": snapshot, "changes": changes, "module_carried": carried,
            "changes_raw": None if changes is None else first_part}


def check_full_snapshot(snapshot, check=19):
    """Check 19 for a full bundle's (or a cache's) snapshot. Returns its contents."""
    try:
        contents = decode_snapshot(snapshot)
    except SnapshotError as e:
        raise Refusal("bad-snapshot", check, f"the snapshot fails section 4: {e.variant}: {e.reason}")
    if encode_snapshot(contents) != snapshot:
        raise Refusal("malformed", check,
                      "the snapshot is not canonical: its contents, encoded again, differ "
                      "(section 4 leaves no other way: this is a producer's bug)")
    return contents


def layout_for(path, given):
    if given:
        return given
    return "cache" if os.path.basename(path) == "bundle.cache" else "served"


def load_base(path, trusted, layout_arg):
    """The held state from --base: a raw snapshot, or a bundle holding one."""
    try:
        data = read_file(path)
    except Refusal as r:
        raise UsageError(f"--base: {r.kind}: {r.reason}")
    if data[:8] == b"KEYSCOPE":
        try:
            contents = check_full_snapshot(data)
        except Refusal as r:
            raise UsageError(f"--base: the snapshot is refused: {r.kind}: {r.reason}")
        return {"source": "snapshot", "contents": contents, "snapshot": data[-32:].hex(),
                "version": None, "revision": None, "module": None}
    layout = layout_arg or layout_for(path, None)
    try:
        head = read_bundle(data, layout, trusted)
        if head["snapshot"] is None:
            raise UsageError("--base: a served delta holds no snapshot; give the cache file "
                             "of the gateway that took it, or the snapshot")
        contents = check_full_snapshot(head["snapshot"])
    except Refusal as r:
        raise UsageError(f"--base: the bundle is refused: {r.kind} (check {r.check}): {r.reason}")
    m = head["manifest"]
    return {"source": f"{layout} {m['kind']} bundle", "contents": contents,
            "snapshot": m["snapshot"]["sha256"], "version": m["version"],
            "revision": m["revision"], "module": m["module"]["sha256"]}


def verify(args):
    trusted = {}
    public = load_public_key(args.public_key, "--public-key")
    trusted[key_id(public)] = public
    if args.next_public_key:
        nxt = load_public_key(args.next_public_key, "--next-public-key")
        if nxt == public:
            raise UsageError("--next-public-key is the same key as --public-key")
        trusted[key_id(nxt)] = nxt
    layout = layout_for(args.bundle, args.layout)
    held_given = any(v is not None for v in (args.base, args.held_version, args.held_revision,
                                             args.held_snapshot, args.held_module))
    if layout == "cache" and held_given:
        raise UsageError("a cache is checked with nothing held: --base and --held-* do not apply")
    for flag in ("held_snapshot", "held_module"):
        v = getattr(args, flag)
        if v is not None and (len(v) != 64 or not set(v) <= HEX):
            raise UsageError(f"--{flag.replace('_', '-')}: 64 lowercase hex digits")

    held = None
    if held_given:
        held = {"source": "arguments", "contents": None, "snapshot": None, "version": None,
                "revision": None, "module": None}
        if args.base:
            held = load_base(args.base, trusted, args.base_layout)
        for name in ("version", "revision", "snapshot", "module"):
            v = getattr(args, "held_" + name)
            if v is not None:
                held[name] = v
        if held["contents"] is not None and args.held_snapshot is not None \
                and args.held_snapshot != held["snapshot"]:
            raise UsageError("--held-snapshot is not the --base snapshot's digest")

    notes = []
    bundle = read_bundle(read_file(args.bundle), layout, trusted)  # 1 to 16
    m = bundle["manifest"]

    if layout == "served":  # 17
        if m["expires_at_ms"] <= args.now:
            raise Refusal("expired", 17,
                          f"expires_at_ms {m['expires_at_ms']} is at or before now ({args.now}), "
                          f"{(args.now - m['expires_at_ms']) / 1000:.3f} s ago")
    elif m["expires_at_ms"] <= args.now:
        notes.append("expired, which a cache may be (taken at start, stale from the start)")

    status = "new"
    state = (m["revision"], m["snapshot"]["sha256"], m["module"]["sha256"])
    if held is not None:  # 18
        held_state = (held["revision"], held["snapshot"], held["module"])
        unknown = [name for name, v in zip(("revision", "snapshot", "module"), held_state)
                   if v is None]
        same_state = all(h is None or h == s for h, s in zip(held_state, state))
        if held["version"] is None:
            notes.append("no held version: the version was not compared")
        if held["version"] is not None and m["version"] == held["version"] and same_state:
            status = "held"
            if unknown:
                notes.append(f"the same version as held; the held {', '.join(unknown)} unknown, "
                             "so not compared")
        elif held["version"] is not None and m["version"] <= held["version"]:
            raise Refusal("rollback", 18,
                          f"version {m['version']} is not above the held {held['version']}")
        elif held["revision"] is not None and m["revision"] < held["revision"]:
            raise Refusal("rollback", 18,
                          f"revision {m['revision']} is below the held {held['revision']}")
        elif not unknown and same_state:
            status = "renewal"
    else:
        notes.append("nothing held given: no rollback check")

    applied = None
    if status == "new":  # 19
        if bundle["snapshot"] is not None:
            check_full_snapshot(bundle["snapshot"])
        elif held is None or (held["snapshot"] is None and held["revision"] is None):
            applied = False
            notes.append("NOT applied: no --base, so the delta's base and result are unchecked")
        else:
            base = m["base"]
            if (held["revision"] is not None and base["revision"] != held["revision"]) \
                    or (held["snapshot"] is not None and base["sha256"] != held["snapshot"]):
                raise Refusal("wrong-base", 19,
                              f"the delta's base (revision {base['revision']}, "
                              f"{base['sha256'][:16]}…) is not the held state (revision "
                              f"{'unknown' if held['revision'] is None else held['revision']}, "
                              f"{(held['snapshot'] or 'unknown')[:16]}…)")
            if held["revision"] is None:
                notes.append("the held revision is unknown: the base's revision was not compared")
            if held["contents"] is None:
                applied = False
                notes.append("NOT applied: the base matches, but no --base snapshot was given, "
                             "so the result is unchecked")
            else:
                for sid, scope in bundle["changes"][0]:
                    if scope is not None and scope["declared_id"] != sid:
                        notes.append(f"the scope pair [{sid}, …] carries the id "
                                     f"{scope['declared_id']}: the pair's id was used (the "
                                     "format says only that keyscope writes its pair's id)")
                result = apply_delta(held["contents"], bundle["changes"])
                digest = result[-32:].hex()
                if digest != m["snapshot"]["sha256"]:
                    raise Refusal("delta-mismatch", 19,
                                  f"the delta applied gives {digest}, not snapshot.sha256 "
                                  f"{m['snapshot']['sha256']}")
                applied = True
                if len(result) != m["snapshot"]["bytes"]:
                    notes.append(f"the result is {len(result)} bytes, snapshot.bytes says "
                                 f"{m['snapshot']['bytes']} (not compared, as the format says)")

    if status == "new" and not bundle["module_carried"]:  # 20
        if held is None and applied is None:
            raise Refusal("malformed", 20, "the bundle does not carry its module, and none is held")
        if held is None or held["module"] is None:
            notes.append("the module is not carried and the held module is unknown: not compared")
        elif held["module"] != m["module"]["sha256"]:
            raise Refusal("malformed", 20,
                          f"the bundle does not carry its module, and the held module "
                          f"{held['module'][:16]}… is another")
    notes.append("check 21 (the module's swap: compile, instantiate, self-test) is not run")

    if applied is False:
        status = "unchecked"
    return {
        "accepted": True, "status": status, "layout": layout, "kind": m["kind"],
        "version": m["version"], "revision": m["revision"], "signer": m["signer"],
        "expires_at_ms": m["expires_at_ms"], "published_at_ms": m["published_at_ms"],
        "snapshot": m["snapshot"], "module": m["module"],
        "module_carried": bundle["module_carried"],
        "base": m.get("base"), "delta": m.get("delta") if m["kind"] == "delta" else None,
        "delta_applied": applied, "bytes": bundle["size"], "head_bytes": bundle["head_len"],
        "notes": notes,
    }


def u64_arg(text):
    if not text.isdigit() or int(text) > U64_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a u64 in decimal")
    return int(text)


def main(argv):
    parser = argparse.ArgumentParser(
        prog="verify_bundle.py",
        description="Verify a keyscope bundle (format 2) as docs/fleet.md specifies.")
    parser.add_argument("bundle", metavar="BUNDLE")
    parser.add_argument("--public-key", required=True, metavar="KEY",
                        help="the trusted key: `ed25519:HEX`, or a file holding it")
    parser.add_argument("--next-public-key", metavar="KEY",
                        help="the next key, trusted as well during a rotation")
    parser.add_argument("--layout", choices=["served", "cache"],
                        help="default: cache for a file named bundle.cache, else served")
    parser.add_argument("--base", metavar="FILE",
                        help="the held state: a snapshot, a full bundle or a cache file")
    parser.add_argument("--base-layout", choices=["served", "cache"],
                        help="the layout of a bundle given as --base (default as for BUNDLE)")
    parser.add_argument("--held-version", type=u64_arg, metavar="N")
    parser.add_argument("--held-revision", type=u64_arg, metavar="N")
    parser.add_argument("--held-snapshot", metavar="HEX")
    parser.add_argument("--held-module", metavar="HEX")
    parser.add_argument("--now", type=u64_arg, metavar="MS",
                        help="the clock, in ms since the Unix epoch (default: now)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.now is None:
        args.now = time.time_ns() // 1_000_000

    try:
        result = verify(args)
    except UsageError as e:
        print(f"verify_bundle.py: {e}", file=sys.stderr)
        return 2
    except Refusal as r:
        if args.json:
            print(json.dumps({"accepted": False, "kind": r.kind, "check": r.check,
                              "reason": r.reason}))
        else:
            print(f"refused {r.kind} (check {r.check}): {r.reason}")
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        word = {"new": "accepted", "renewal": "accepted (a renewal: the held state, newer version)",
                "held": "accepted (nothing new: the bundle held)",
                "unchecked": "verified, result unchecked"}[result["status"]]
        print(f"{word}: {result['layout']} {result['kind']} bundle, version {result['version']}, "
              f"revision {result['revision']}, signer {result['signer']}, {result['bytes']} bytes")
        print(f"  snapshot {result['snapshot']['sha256']} ({result['snapshot']['bytes']} bytes)")
        print(f"  module   {result['module']['sha256']} ({result['module']['bytes']} bytes, "
              f"{'carried' if result['module_carried'] else 'not carried'})")
        if result["kind"] == "delta":
            base, delta = result["base"], result["delta"]
            print(f"  base     revision {base['revision']}, {base['sha256']}")
            if delta:
                print(f"  changes  {delta['sha256']} ({delta['bytes']} bytes); applied: "
                      f"{ {True: 'yes, digest matches', False: 'no', None: 'not needed'}[result['delta_applied']] }")
        print(f"  expires  {result['expires_at_ms']} ms")
        for note in result["notes"]:
            print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
