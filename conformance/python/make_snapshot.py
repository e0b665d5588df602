"""A keyscope snapshot producer written from conformance/CONTRACT.md alone
(section 4), with nothing but the standard library.

    python make_snapshot.py CONTENTS.json OUT.snapshot

CONTENTS.json:
    {"operations": [{"name": "agents.get", "requires": "agents:view"}, ...],
     "scopes": [{"id": 1, "app": "acme", "agents": "view", "runtime": ["run"]}, ...],
     "keys": [{"sha256": "<hex>", "id": 1, "scope_id": 1, "revoked": false,
               "not_after": 1767225600000 or null}, ...],
     "routes": [{"method": "GET", "pattern": "/api/v2/apps/{app}/agents", "op": "agents.list"}, ...]}

keyscope's tests feed it the contents of every golden snapshot and require
the same bytes as keyscope's own encoder, and a component that loads them.
"""

import hashlib
import json
import struct
import sys

LEVELS = ["none", "view", "edit", "full"]
PERMISSIONS = ["run", "session-create", "session-terminate", "document-upload"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
DELETED = 0xFFFFFFFF
NEVER = 0xFFFFFFFFFFFFFFFF


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


def encode(contents):
    scopes = {s["id"]: s for s in contents["scopes"]}
    apps = sorted({s["app"] for s in contents["scopes"]}, key=bytewise)
    app_id = {name: i for i, name in enumerate(apps)}
    operations = sorted(contents["operations"], key=lambda op: bytewise(op["name"]))
    op_id = {op["name"]: i for i, op in enumerate(operations)}
    # A slot per live scope, and one per deleted scope a revoked key names.
    slot_ids = sorted(set(scopes) | {k["scope_id"] for k in contents["keys"]})
    slot_of = {scope_id: i for i, scope_id in enumerate(slot_ids)}

    body = struct.pack("<I", len(apps)) + b"".join(string(a) for a in apps)
    body += struct.pack("<I", len(operations))
    for op in operations:
        body += string(op["name"]) + requirement(op["requires"])
    body += struct.pack("<I", len(slot_ids))
    for scope_id in slot_ids:
        scope = scopes.get(scope_id)
        if scope is None:
            body += struct.pack("<QIBBH", scope_id, DELETED, 0, 0, 0)
        else:
            bits = sum(1 << PERMISSIONS.index(p) for p in scope["runtime"])
            body += struct.pack(
                "<QIBBH", scope_id, app_id[scope["app"]], LEVELS.index(scope["agents"]), bits, 0
            )
    body += struct.pack("<I", len(contents["routes"]))
    for route in contents["routes"]:
        body += struct.pack("<BBI", METHODS.index(route["method"]), 0, op_id[route["op"]])
        body += string(route["pattern"])
    keys = sorted(contents["keys"], key=lambda k: bytes.fromhex(k["sha256"]))
    body += struct.pack("<I", len(keys))
    for key in keys:
        not_after = NEVER if key.get("not_after") is None else key["not_after"]
        flags = 1 if key["revoked"] else 0
        body += bytes.fromhex(key["sha256"])
        body += struct.pack("<QQII", key["id"], not_after, slot_of[key["scope_id"]], flags)

    header = b"KEYSCOPE" + struct.pack("<HHI", 4, 0, len(body))
    return header + body + hashlib.sha256(header + body).digest()


def main(argv):
    if len(argv) != 2:
        print("usage: python make_snapshot.py CONTENTS.json OUT.snapshot", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        contents = json.load(f)
    with open(argv[1], "wb") as f:
        f.write(encode(contents))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
