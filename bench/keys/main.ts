/**
 * Millions of sealed keys: creates `--count` keys sealed in a SQLite store (mostly P-256, as at the
 * edge) and measures cold loads (fetch + unseal + parse), cache hits, guest bytes per cached key,
 * store bytes per key, signing throughput with a working set larger than the guest's cache, and
 * Keyless lookups by SKI in the store's name index against listing every key into memory.
 * Writes bench/keys/RESULTS.md.
 *
 *   deno run -A bench/keys/main.ts --count 1000000 [--dir .cache/bench-keys] [--seconds 20]
 *
 * The store is reused across runs: keys are only created up to `--count`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Compartment } from "../../src/guest/compartment.ts";
import { openCompartment } from "../../src/guest/files.ts";
import { ALGORITHM_CODES, decodeResponse, encodeRequest, keyIdBytes, Op, Status } from "../../src/core/protocol.ts";
import { MIX } from "./_mix.ts";
import { SqliteKeyStore } from "../../src/deno/store/sqlite.ts";
import { keylessNames, keyNames, skiName } from "../../src/core/key_names.ts";
import type { StoredKey } from "../../src/core/key_store.ts";
import { wasmModule } from "../../test/_wasm.ts";

const { values } = parseArgs({
  options: {
    count: { type: "string", default: "1000000" },
    dir: { type: "string", default: ".cache/bench-keys" },
    seconds: { type: "string", default: "20" },
  },
});
const COUNT = Number(values.count);
const DIR = values.dir!;
const SECONDS = Number(values.seconds);

const CREATE_RANGE = 2000;
const WASM = wasmModule();
const DIGEST = new Uint8Array(32);
const SIGN_P256 = new Uint8Array([ALGORITHM_CODES.ECDSA_SHA_256, 0]);
const SIGN_RSA = new Uint8Array([ALGORITHM_CODES.RSASSA_PKCS1_V1_5_SHA_256, 0]);

Deno.mkdirSync(DIR, { recursive: true });
const openStart = performance.now();
const store = SqliteKeyStore.open(`${DIR}/keys.db`);
const openSeconds = (performance.now() - openStart) / 1000;
const masterKeyPath = `${DIR}/master.key`;
const guest = (cacheBytes = 64 * 1024 * 1024) => openCompartment({ wasm: WASM, masterKeyPath, createMasterKey: true, cacheBytes });

function call(c: Compartment, op: Op, ...parts: Uint8Array[]): Uint8Array {
  const { status, body } = decodeResponse(c.handle(encodeRequest(op, ...parts)));
  if (status !== Status.OK) throw new Error(`op ${op}: status ${status}`);
  return body;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function latency(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  return `p50 ${(percentile(s, 50) * 1000).toFixed(0)} µs, p99 ${(percentile(s, 99) * 1000).toFixed(0)} µs (n=${s.length})`;
}

// ---- create
const existing = await store.count();
const createStart = performance.now();
if (existing < COUNT) {
  // Make the master key once, then one creating worker per core; ranges are handed out from a
  // queue, so the slow RSA keys spread over the cores.
  guest(1024 * 1024);
  const ranges: [number, number][] = [];
  for (let from = existing; from < COUNT; from += CREATE_RANGE) ranges.push([from, Math.min(COUNT, from + CREATE_RANGE)]);
  let created = existing;
  await Promise.all(Array.from({ length: navigator.hardwareConcurrency }, async () => {
    const worker = new Worker(new URL("./_create_worker.ts", import.meta.url), { type: "module" });
    const answers: ((data: { records: StoredKey[] }) => void)[] = [];
    worker.onmessage = (e) => answers.shift()!(e.data);
    const ask = (message: unknown) => new Promise<{ records: StoredKey[] }>((resolve) => {
      answers.push(resolve);
      worker.postMessage(message);
    });
    await ask({ wasm: WASM, masterKeyPath });
    for (let range = ranges.shift(); range !== undefined; range = ranges.shift()) {
      const { records } = await ask({ from: range[0], to: range[1] });
      await store.putMany(records);
      if (Math.floor((created += records.length) / 20000) > Math.floor((created - records.length) / 20000)) {
        console.log(`created ${created} keys`);
      }
    }
    worker.terminate();
  }));
}
const createSeconds = (performance.now() - createStart) / 1000;
const total = await store.count();
console.log(`store holds ${total} keys (created ${total - existing} in ${createSeconds.toFixed(0)} s)`);

// ---- sample ids per spec
const ids: Record<string, string[]> = {};
{
  let cursor: string | undefined;
  // A spread sample: every key's page is read, ids kept per spec up to 20,000 each.
  const stepPages = Math.max(1, Math.floor(total / 200_000));
  for (let page = 0;; page++) {
    const p = await store.list({ limit: 1000, cursor });
    if (page % stepPages === 0) {
      for (const k of p.keys) {
        const list = ids[k.keySpec] ??= [];
        if (list.length < 20_000) list.push(k.id);
      }
    }
    cursor = p.nextCursor;
    if (!cursor) break;
  }
}

// ---- cold loads and hits
const cold: Record<string, number[]> = {};
const hits: number[] = [];
{
  const c = guest();
  for (const [spec, list] of Object.entries(ids)) {
    const n = spec.startsWith("RSA") ? 200 : 2000;
    for (const id of list.slice(0, n)) {
      const t0 = performance.now();
      const stored = (await store.get(id))!;
      call(c, Op.UNSEAL, keyIdBytes(id)!, stored.sealed);
      (cold[spec] ??= []).push(performance.now() - t0);
    }
  }
  const p256 = ids.ECC_NIST_P256.slice(0, 2000);
  for (let i = 0; i < 20_000; i++) {
    const id = keyIdBytes(p256[i % p256.length])!;
    const t0 = performance.now();
    call(c, Op.SIGN, id, SIGN_P256, DIGEST);
    hits.push(performance.now() - t0);
  }
}

// ---- guest bytes per cached key
function stats(c: Compartment) {
  const v = new DataView(call(c, Op.STATS).slice().buffer);
  return { keys: v.getUint32(0, true), accounted: Number(v.getBigUint64(4, true)), memory: Number(v.getBigUint64(28, true)) };
}
const perKey: Record<string, { memory: number; accounted: number; n: number }> = {};
for (const [spec, list] of Object.entries(ids)) {
  const c = guest();
  const n = Math.min(list.length, spec.startsWith("RSA") ? 1000 : 10_000);
  // Warm the allocator with one key first so fixed costs are not counted.
  const first = (await store.get(list[0]))!;
  call(c, Op.UNSEAL, keyIdBytes(list[0])!, first.sealed);
  if (spec.startsWith("RSA")) call(c, Op.SIGN, keyIdBytes(list[0])!, SIGN_RSA, DIGEST);
  const before = stats(c);
  for (const id of list.slice(1, n)) {
    const stored = (await store.get(id))!;
    call(c, Op.UNSEAL, keyIdBytes(id)!, stored.sealed);
    // RSA builds its Montgomery contexts on first use: sign once so they are counted.
    if (spec.startsWith("RSA")) call(c, Op.SIGN, keyIdBytes(id)!, SIGN_RSA, DIGEST);
  }
  const after = stats(c);
  const k = after.keys - before.keys;
  perKey[spec] = { memory: (after.memory - before.memory) / k, accounted: (after.accounted - before.accounted) / k, n: k };
}

// ---- throughput: working set larger than the cache
async function throughput(cacheBytes: number, workingSet: string[]): Promise<{ perSecond: number; missRatio: number }> {
  const c = guest(cacheBytes);
  let signs = 0;
  let misses = 0;
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    const id = workingSet[Math.floor(Math.random() * workingSet.length)];
    const idBytes = keyIdBytes(id)!;
    let r = decodeResponse(c.handle(encodeRequest(Op.SIGN, idBytes, SIGN_P256, DIGEST)));
    if (r.status === Status.KEY_NOT_FOUND) {
      misses++;
      const stored = (await store.get(id))!;
      call(c, Op.UNSEAL, idBytes, stored.sealed);
      r = decodeResponse(c.handle(encodeRequest(Op.SIGN, idBytes, SIGN_P256, DIGEST)));
    }
    if (r.status !== Status.OK) throw new Error(`sign: status ${r.status}`);
    signs++;
  }
  return { perSecond: signs / SECONDS, missRatio: misses / signs };
}
const p256 = ids.ECC_NIST_P256;
const cacheForBench = 4 * 1024 * 1024;
const fitting = await throughput(cacheForBench, p256.slice(0, 1000));
const larger = await throughput(cacheForBench, p256.slice(0, 20_000));

// ---- Keyless lookups: the store's name index, against what the key server did before it
const byName: number[] = [];
let listedNames = 0;
let listSeconds = 0;
{
  const sample: Uint8Array[] = [];
  const stepPages = Math.max(1, Math.floor(total / 2_000_000));
  const listStart = performance.now();
  const index = new Map<string, string>();
  let cursor: string | undefined;
  for (let page = 0;; page++) {
    const p = await store.list({ limit: 1000, cursor });
    for (const k of p.keys) for (const name of keyNames(k.publicKey)) index.set(name, k.id);
    if (page % stepPages === 0 && sample.length < 2000) sample.push(keylessNames(p.keys[0].publicKey)!.ski);
    cursor = p.nextCursor;
    if (!cursor) break;
  }
  listSeconds = (performance.now() - listStart) / 1000;
  listedNames = index.size;
  for (const ski of sample) {
    const t0 = performance.now();
    const id = await store.findByKeylessName({ ski });
    byName.push(performance.now() - t0);
    if (id !== index.get(skiName(ski))) throw new Error(`SKI ${ski.toHex()}: the index and the store disagree`);
  }
}

// ---- store size
store.close();
const sizeOf = (path: string) => {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
};
const dbBytes = sizeOf(`${DIR}/keys.db`);

const lines = [
  "# Sealed keys at scale (bench/keys)",
  "",
  `Run: \`deno run -A bench/keys/main.ts --count ${COUNT} --seconds ${SECONDS}\` on ${new Date().toISOString().slice(0, 10)},`,
  `${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}, one inline guest, SQLite store in \`${DIR}\`.`,
  `Mix: ${MIX.map(([s, f]) => `${(f * 100).toFixed(0)}% ${s}`).join(", ")}.`,
  "",
  `- Keys in the store: ${total}${existing ? ` (${total - existing} created this run in ${createSeconds.toFixed(0)} s)` : ` (created in ${createSeconds.toFixed(0)} s, ${((total - existing) / createSeconds).toFixed(0)} keys/s, generation inside the guest on every core + sealing + batched inserts)`}`,
  ...(total < 1_000_000 && createSeconds > 0 && total > existing
    ? [`- At that rate, 1,000,000 keys take ${((1_000_000 / ((total - existing) / createSeconds)) / 3600).toFixed(1)} h to create on this machine; the count is a flag.`]
    : []),
  `- Store size: ${(dbBytes / total).toFixed(0)} bytes per key (${(dbBytes / 2 ** 20).toFixed(1)} MiB file, SQLite, id + spec + SPKI + sealed blob)`,
  "",
  "| spec | cold load (store fetch + unseal + parse) | guest bytes per cached key (memory growth) | accounted by the cache |",
  "|---|---|---|---|",
  ...Object.keys(perKey).map((spec) =>
    `| ${spec} | ${latency(cold[spec])} | ${perKey[spec].memory.toFixed(0)} (n=${perKey[spec].n}) | ${perKey[spec].accounted.toFixed(0)} |`
  ),
  "",
  `- Hit (cached P-256 key, ECDSA sign of a digest, compartment call): ${latency(hits)}`,
  `- Throughput, P-256, cache ${cacheForBench / 2 ** 20} MiB, uniform random keys for ${SECONDS} s each:`,
  `  - working set 1,000 keys (fits): ${fitting.perSecond.toFixed(0)} signatures/s, miss ratio ${(fitting.missRatio * 100).toFixed(1)}%`,
  `  - working set 20,000 keys (larger than the cache): ${larger.perSecond.toFixed(0)} signatures/s, miss ratio ${(larger.missRatio * 100).toFixed(1)}%`,
  `- Keyless lookup by SKI in the store's name index: ${latency(byName)}. Listing every key into an in-memory index instead (the key server's way before the store kept one): ${listSeconds.toFixed(1)} s for ${listedNames} names, on every miss at most once a second. Opening the store took ${openSeconds.toFixed(1)} s (a store from before the index is indexed then, once).`,
  "",
];
Deno.writeTextFileSync(new URL("./RESULTS.md", import.meta.url), lines.join("\n"));
console.log(lines.join("\n"));
