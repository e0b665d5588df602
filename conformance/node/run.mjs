// keyscope conformance runner for Node, through jco.
//
//   node run.mjs POLICY.wasm SUITE.json [--bench N]
//
// Transpiles the component with jco, then for each group of the suite:
// instantiates it afresh, loads the group's snapshot, and for each case
// derives the credential from the raw key (format, CRC32 checksum, SHA-256)
// exactly as conformance/CONTRACT.md says, checks it against the suite, and
// compares the decision. Prints "N passed, M failed"; exits 1 on any failure.

import { transpile } from '@bytecodealliance/jco';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { crc32 } from 'node:zlib';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const KEY_LEN = 3 + 32 + 6;

/** The credential a host passes for a presented key (CONTRACT.md, "Keys"). */
export function credential(key) {
  if (key === null || key === undefined || key === '') return { tag: 'missing' };
  if (!key.startsWith('ks_') || key.length !== KEY_LEN || !/^[0-9A-Za-z]+$/.test(key.slice(3))) {
    return { tag: 'malformed' };
  }
  let value = crc32(Buffer.from(key.slice(0, KEY_LEN - 6), 'ascii'));
  let checksum = '';
  for (let i = 0; i < 6; i++) {
    checksum = BASE62[value % 62] + checksum;
    value = Math.floor(value / 62);
  }
  if (checksum !== key.slice(KEY_LEN - 6)) return { tag: 'malformed' };
  return { tag: 'digest', sha256: createHash('sha256').update(key, 'ascii').digest('hex') };
}

/** The WIT credential: the digest as four big-endian u64 words. */
function toWit(cred) {
  if (cred.tag !== 'digest') return { tag: cred.tag };
  const bytes = Buffer.from(cred.sha256, 'hex');
  return { tag: 'digest', val: [0, 8, 16, 24].map((at) => bytes.readBigUInt64BE(at)) };
}

/**
 * Turns a case's names into the loaded snapshot's ids (CONTRACT.md,
 * "Requests"): `stamp` is the first word of the snapshot's digest, `names`
 * what `names()` gave after the load.
 */
function resolver(stamp, names) {
  const ids = (list) => new Map(list.map((name, id) => [name, id]));
  const apps = ids(names.apps);
  const operations = ids(names.operations);
  return (c) => ({
    credential: toWit(c.credential),
    snapshot: stamp,
    app: apps.get(c.app),
    op: operations.get(c.op),
    now: BigInt(c.now),
  });
}

/** The decision as the CLI prints it. */
function toJson(d) {
  return {
    allow: d.allow,
    reason: d.reason,
    key_id: d.keyId === undefined ? null : Number(d.keyId),
    scope_id: d.scopeId === undefined ? null : Number(d.scopeId),
    required: d.required === undefined ? null : `${d.required.tag}:${d.required.val}`,
  };
}

async function load(policyPath) {
  const { files } = await transpile(await readFile(policyPath), {
    name: 'policy',
    instantiation: { tag: 'async' },
    noTypescript: true,
  });
  const dir = await mkdtemp(join(tmpdir(), 'keyscope-jco-'));
  for (const [name, data] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), data);
  }
  const module = await import(pathToFileURL(join(dir, 'policy.js')).href);
  const cores = new Map();
  const getCoreModule = (path) => {
    if (!cores.has(path)) cores.set(path, WebAssembly.compile(files[path]));
    return cores.get(path);
  };
  // A fresh instance: no imports to give, because the policy has none.
  const instantiate = async () => (await module.instantiate(getCoreModule, {})).decide;
  return { instantiate, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

async function main() {
  const [policyPath, suitePath, ...rest] = process.argv.slice(2);
  if (!policyPath || !suitePath) {
    console.error('usage: node run.mjs POLICY.wasm SUITE.json [--bench N]');
    process.exit(2);
  }
  const bench = rest[0] === '--bench' ? Number(rest[1]) : 0;
  const suite = JSON.parse(await readFile(suitePath, 'utf8'));
  const { instantiate, cleanup } = await load(policyPath);
  let passed = 0;
  let failed = 0;
  let timed = null;
  try {
    for (const group of suite.groups) {
      const api = await instantiate();
      let resolve = resolver(0n, { apps: [], operations: [] });
      if (group.snapshot !== null) {
        const info = api.loadSnapshot(Buffer.from(group.snapshot, 'hex')); // throws on a load error
        resolve = resolver(info.digest[0], api.names());
      }
      const check = (cases, after) => {
        for (const c of cases) {
          const derived = credential(c.key);
          const got = toJson(api.evaluate(resolve(c)));
          if (!isDeepStrictEqual(derived, c.credential)) {
            failed++;
            console.error(`FAIL ${group.name} / ${c.name}${after}: credential ${JSON.stringify(derived)}, suite says ${JSON.stringify(c.credential)}`);
          } else if (!isDeepStrictEqual(got, c.expect)) {
            failed++;
            console.error(`FAIL ${group.name} / ${c.name}${after}: expected ${JSON.stringify(c.expect)}, got ${JSON.stringify(got)}`);
          } else {
            passed++;
          }
          if (bench > 0 && timed === null && c.expect.allow) {
            const request = resolve(c);
            const start = process.hrtime.bigint();
            for (let i = 0; i < bench; i++) api.evaluate(request);
            timed = Number(process.hrtime.bigint() - start) / bench;
          }
        }
      };
      check(group.cases, '');
      // Deltas in turn: `applied`, or the delta-error's tag. A refused one
      // changes nothing; an applied one brings new names.
      for (const step of group.steps) {
        let got;
        try {
          const info = api.applyDelta(Buffer.from(step.delta, 'hex'));
          resolve = resolver(info.digest[0], api.names());
          got = 'applied';
        } catch (e) {
          if (!(e.payload && e.payload.tag)) throw e;
          got = e.payload.tag;
        }
        if (got !== step.expect) {
          failed++;
          console.error(`FAIL ${group.name} / ${step.name}: expected ${step.expect}, got ${got}`);
        }
        check(step.cases, ` (after ${step.name})`);
      }
    }
  } finally {
    await cleanup();
  }
  if (timed !== null) console.log(`node (jco): ${timed.toFixed(0)} ns per decision`);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

await main();
