"""A keyscope snapshot and delta producer written from conformance/CONTRACT.md
alone (section 4), with nothing but the standard library.

    python make_snapshot.py CONTENTS.json OUT.snapshot
    python make_snapshot.py --delta BASE.json CHANGES.json OUT.delta

CONTENTS.json (and BASE.json, the contents a delta applies to):
    {"operations": [{"name": "agents.get", "requires": "agents:view"}, ...],
     "scopes": [{"id": 1, "app": "acme", "agents": "view", "runtime": ["run"]}, ...],
     "keys": [{"sha256": "<hex>", "id": 1, "scope_id": 1, "revoked": false,
               "not_after": 1767225600000 or null}, ...],
     "routes": [{"method": "GET", "pattern": "/api/v2/apps/{app}/agents", "op": "agents.list"}, ...]}

CHANGES.json:
    {"scopes": [[ID, SCOPE or null], ...],       # put or delete, in order
     "keys": [KEY, ...],                         # each replaces the key of its digest, or is added
     "catalogue": null or {"operations": [...], "routes": [...]}}

keyscope's tests feed it the contents of every golden snapshot and require
the same bytes as keyscope's own encoder, and deltas that a component
applies to the digest keyscope computes.
"""

import copy
import hashlib
import json
import struct
import sys

LEVELS = ["none", "view", "edit", "full"]
PERMISSIONS = ["run", "session-create", "session-terminate", "document-upload"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
NEVER = 0xFFFFFFFFFFFFFFFF
FORMAT = 5
PAGE_RECORDS = 64


def sha256(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def string(text):
    raw = text.encode("utf-8")
    assert 0 < len(raw) <= 0xFFFF, f"a string must be 1 to 65535 bytes: {text!r}"
    return struct.pack("<H", len(raw)) + raw


def requirement(text):
    kind, value = text.split(":")
    if kind == "agents":
        return bytes([0, LEVELS.index(value)])
    return bytes([1, PERMISSIONS.index(value)])


def bytewise(text):
    return text.encode("utf-8")


def catalogue(operations, routes):
    """The operations and routes sections."""
    operations = sorted(operations, key=lambda op: bytewise(op["name"]))
    op_id = {op["name"]: i for i, op in enumerate(operations)}
    body = struct.pack("<I", len(operations))
    for op in operations:
        body += string(op["name"]) + requirement(op["requires"])
    body += struct.pack("<I", len(routes))
    for route in routes:
        body += struct.pack("<BBI", METHODS.index(route["method"]), 0, op_id[route["op"]])
        body += string(route["pattern"])
    return body


def runtime_bits(scope):
    return sum(1 << PERMISSIONS.index(p) for p in scope["runtime"])


def head(contents):
    """The first four sections: apps, operations, scopes, routes."""
    apps = sorted({s["app"] for s in contents["scopes"]}, key=bytewise)
    app_id = {name: i for i, name in enumerate(apps)}
    body = struct.pack("<I", len(apps)) + b"".join(string(a) for a in apps)
    operations_and_routes = catalogue(contents["operations"], contents["routes"])
    count = struct.unpack_from("<I", operations_and_routes)[0]
    # The operations section ends where the routes' count starts.
    at = 4
    for _ in range(count):
        at += 2 + struct.unpack_from("<H", operations_and_routes, at)[0] + 2
    body += operations_and_routes[:at]
    scopes = sorted(contents["scopes"], key=lambda s: s["id"])
    body += struct.pack("<I", len(scopes))
    for scope in scopes:
        body += struct.pack(
            "<QIBBH", scope["id"], app_id[scope["app"]], LEVELS.index(scope["agents"]),
            runtime_bits(scope), 0,
        )
    return body + operations_and_routes[at:]


def record(key):
    not_after = NEVER if key.get("not_after") is None else key["not_after"]
    flags = 1 if key["revoked"] else 0
    return bytes.fromhex(key["sha256"]) + struct.pack(
        "<QQQII", key["id"], not_after, key["scope_id"], flags, 0
    )


def page_bits(count):
    bits = 0
    while PAGE_RECORDS << bits < count:
        bits += 1
    return bits


def key_root(records):
    """The root of the tree over the pages of `records` (sorted)."""
    bits = page_bits(len(records))
    pages = [[] for _ in range(1 << bits)]
    for r in records:
        pages[int.from_bytes(r[:8], "big") >> (64 - bits) if bits else 0].append(r)
    level = [sha256(b"\x00", *page) for page in pages]
    while len(level) > 1:
        level = [sha256(b"\x01", level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def encode(contents):
    sections = head(contents)
    records = sorted(record(k) for k in contents["keys"])
    body = sections + struct.pack("<I", len(records)) + b"".join(records)
    header = b"KEYSCOPE" + struct.pack("<HHI", FORMAT, 0, len(body))
    digest = sha256(b"\x02", header, sha256(sections), key_root(records))
    return header + body + digest


def head_length(body):
    """The length of a body's first four sections, read by their counts and
    lengths alone."""
    pos = 0
    for section in ("apps", "operations"):
        count = struct.unpack_from("<I", body, pos)[0]
        pos += 4
        for _ in range(count):
            pos += 2 + struct.unpack_from("<H", body, pos)[0] + (2 if section == "operations" else 0)
    pos += 4 + 16 * struct.unpack_from("<I", body, pos)[0]
    count = struct.unpack_from("<I", body, pos)[0]
    pos += 4
    for _ in range(count):
        pos += 6
        pos += 2 + struct.unpack_from("<H", body, pos)[0]
    return pos


def seal(header, body):
    """The digest of a snapshot with this header and body."""
    n = head_length(body)
    records = [bytes(body[i : i + 64]) for i in range(n + 4, len(body), 64)]
    return sha256(b"\x02", header, sha256(body[:n]), key_root(records))


def apply(contents, changes):
    """The contents after `changes`, as section 4's deltas define it."""
    result = copy.deepcopy(contents)
    scopes = {s["id"]: s for s in result["scopes"]}
    for scope_id, scope in changes["scopes"]:
        if scope is None:
            scopes.pop(scope_id, None)
        else:
            scopes[scope_id] = scope
    result["scopes"] = list(scopes.values())
    if changes.get("catalogue") is not None:
        result["operations"] = changes["catalogue"]["operations"]
        result["routes"] = changes["catalogue"]["routes"]
    keys = {k["sha256"]: k for k in result["keys"]}
    for key in changes["keys"]:
        keys[key["sha256"]] = key
    result["keys"] = list(keys.values())
    return result


def delta(base, changes):
    body = struct.pack("<I", len(changes["scopes"]))
    for scope_id, scope in changes["scopes"]:
        body += struct.pack("<Q", scope_id)
        if scope is None:
            body += b"\x00"
        else:
            body += struct.pack("<BBB", 1, LEVELS.index(scope["agents"]), runtime_bits(scope))
            body += string(scope["app"])
    if changes.get("catalogue") is None:
        body += b"\x00"
    else:
        body += b"\x01" + catalogue(changes["catalogue"]["operations"], changes["catalogue"]["routes"])
    records = sorted(record(k) for k in changes["keys"])
    body += struct.pack("<I", len(records)) + b"".join(records)
    base_digest = encode(base)[-32:]
    result_digest = encode(apply(base, changes))[-32:]
    return b"KEYDELTA" + struct.pack("<HHI", FORMAT, 0, len(body)) + base_digest + result_digest + body


def main(argv):
    if len(argv) == 2:
        with open(argv[0], encoding="utf-8") as f:
            out = encode(json.load(f))
    elif len(argv) == 4 and argv[0] == "--delta":
        with open(argv[1], encoding="utf-8") as f:
            base = json.load(f)
        with open(argv[2], encoding="utf-8") as f:
            changes = json.load(f)
        out = delta(base, changes)
        argv = argv[2:]
    else:
        print(
            "usage: python make_snapshot.py CONTENTS.json OUT.snapshot\n"
            "       python make_snapshot.py --delta BASE.json CHANGES.json OUT.delta",
            file=sys.stderr,
        )
        return 2
    with open(argv[1], "wb") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
