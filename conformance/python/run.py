"""keyscope conformance runner for Python, through wasmtime-py's component API.

    python run.py POLICY.wasm SUITE.json [--bench N]

For each group of the suite: instantiates the component afresh, loads the
group's snapshot, and for each case derives the credential from the raw key
(format, CRC32 checksum, SHA-256) as conformance/CONTRACT.md says, checks it
against the suite, and compares the decision. Prints "N passed, M failed";
exits 1 on any failure.
"""

import hashlib
import json
import re
import sys
import time
import zlib

import wasmtime
import wasmtime.component as wc

INTERFACE = "keyscope:policy/decide@0.4.0"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_LEN = 3 + 32 + 6
ALNUM = re.compile(r"^[0-9A-Za-z]+$")


def credential(key):
    """The credential a host passes for a presented key (CONTRACT.md, "Keys")."""
    if key is None or key == "":
        return {"tag": "missing"}
    if not key.startswith("ks_") or len(key) != KEY_LEN or not ALNUM.match(key[3:]):
        return {"tag": "malformed"}
    value = zlib.crc32(key[: KEY_LEN - 6].encode("ascii"))
    checksum = ""
    for _ in range(6):
        checksum = BASE62[value % 62] + checksum
        value //= 62
    if checksum != key[KEY_LEN - 6 :]:
        return {"tag": "malformed"}
    return {"tag": "digest", "sha256": hashlib.sha256(key.encode("ascii")).hexdigest()}


def to_wit(cred):
    """The WIT credential: the digest as four big-endian u64 words."""
    if cred["tag"] != "digest":
        return wc.Variant(cred["tag"])
    raw = bytes.fromhex(cred["sha256"])
    return wc.Variant("digest", tuple(int.from_bytes(raw[i : i + 8], "big") for i in range(0, 32, 8)))


class Resolver:
    """Turns a case's names into the loaded snapshot's ids (CONTRACT.md,
    "Requests"): `stamp` is the first word of the snapshot's digest, `names`
    what `names()` gave after the load."""

    def __init__(self, stamp=0, apps=(), operations=()):
        self.stamp = stamp
        self.apps = {name: i for i, name in enumerate(apps)}
        self.operations = {name: i for i, name in enumerate(operations)}

    def request(self, case):
        r = wc.Record()
        r.credential = to_wit(case["credential"])
        r.snapshot = self.stamp
        r.app = self.apps.get(case["app"])
        r.op = self.operations.get(case["op"])
        r.now = case["now"]
        return r


def to_json(d):
    """The decision as the CLI prints it."""
    required = getattr(d, "required")
    return {
        "allow": d.allow,
        "reason": d.reason,
        "key_id": getattr(d, "key-id"),
        "scope_id": getattr(d, "scope-id"),
        "required": None if required is None else f"{required.tag}:{required.payload}",
    }


class Policy:
    """A fresh instance of the component in its own store."""

    def __init__(self, engine, component):
        self.store = wasmtime.Store(engine)
        instance = wc.Linker(engine).instantiate(self.store, component)
        iface = instance.get_export_index(self.store, INTERFACE)
        if iface is None:
            raise RuntimeError(f"the component does not export {INTERFACE}")
        func = lambda name: instance.get_func(self.store, instance.get_export_index(self.store, name, iface))
        self._load, self._names, self._evaluate = func("load-snapshot"), func("names"), func("evaluate")
        self._apply = func("apply-delta")

    def load_snapshot(self, data):
        info = self._load(self.store, data)
        if isinstance(info, wc.Variant):  # the err side of result<snapshot-info, load-error>
            raise RuntimeError(f"snapshot refused: {info.tag} {info.payload or ''}")
        return info

    def apply_delta(self, data):
        """`applied` and the new info, or the delta-error's tag and None."""
        info = self._apply(self.store, data)
        if isinstance(info, wc.Variant):  # the err side of result<snapshot-info, delta-error>
            return info.tag, None
        return "applied", info

    def names(self):
        return self._names(self.store)

    def evaluate(self, req):
        return self._evaluate(self.store, req)


def main(argv):
    if len(argv) < 2:
        print("usage: python run.py POLICY.wasm SUITE.json [--bench N]", file=sys.stderr)
        return 2
    policy_path, suite_path = argv[0], argv[1]
    bench = int(argv[3]) if len(argv) >= 4 and argv[2] == "--bench" else 0
    with open(suite_path, encoding="utf-8") as f:
        suite = json.load(f)
    engine = wasmtime.Engine()
    with open(policy_path, "rb") as f:
        component = wc.Component(engine, f.read())
    passed = failed = 0
    timed = None
    for group in suite["groups"]:
        policy = Policy(engine, component)
        resolver = Resolver()
        if group["snapshot"] is not None:
            info = policy.load_snapshot(bytes.fromhex(group["snapshot"]))
            names = policy.names()
            resolver = Resolver(info.digest[0], names.apps, names.operations)
        def check(cases, after):
            nonlocal passed, failed, timed
            for case in cases:
                derived = credential(case["key"])
                got = to_json(policy.evaluate(resolver.request(case)))
                if derived != case["credential"]:
                    failed += 1
                    print(f"FAIL {group['name']} / {case['name']}{after}: credential {derived}, suite says {case['credential']}", file=sys.stderr)
                elif got != case["expect"]:
                    failed += 1
                    print(f"FAIL {group['name']} / {case['name']}{after}: expected {case['expect']}, got {got}", file=sys.stderr)
                else:
                    passed += 1
                if bench and timed is None and case["expect"]["allow"]:
                    req = resolver.request(case)
                    start = time.perf_counter_ns()
                    for _ in range(bench):
                        policy.evaluate(req)
                    timed = (time.perf_counter_ns() - start) / bench

        check(group["cases"], "")
        # Deltas in turn: a refused one changes nothing; an applied one
        # brings new names.
        for step in group["steps"]:
            got, info = policy.apply_delta(bytes.fromhex(step["delta"]))
            if info is not None:
                names = policy.names()
                resolver = Resolver(info.digest[0], names.apps, names.operations)
            if got != step["expect"]:
                failed += 1
                print(f"FAIL {group['name']} / {step['name']}: expected {step['expect']}, got {got}", file=sys.stderr)
            check(step["cases"], f" (after {step['name']})")
    if timed is not None:
        print(f"python (wasmtime-py): {timed:.0f} ns per decision")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
