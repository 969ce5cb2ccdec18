/**
 * Differential fuzz of V8's `i64.mul_wide_u`: random straight-line functions
 * whose multiplicands are often single-use loads (which V8's optimizing tier
 * folds into `mul [memory]`), with addresses from parameters and from loaded
 * values, interleaved stores, and many live values. Each program runs 400
 * times on pseudo-random memory; the parent runs every program under
 * `--liftoff-only` and under `--no-liftoff` and compares the output hashes.
 *
 *   deno run --allow-read --allow-run bench/wide/_fuzz.ts [SEED] [PROGRAMS]
 *
 * @module
 */

import { WIDE_FLAG } from "./_x64_code.ts";

if (!Deno.args.includes("--child")) {
  const [seed = "1", programs = "300"] = Deno.args;
  const run = async (tier: string) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-config", "--no-lock", `--v8-flags=${WIDE_FLAG},${tier}`, new URL(import.meta.url).pathname, seed, programs, "--child"],
      stdout: "piped",
    }).output();
    if (!out.success) throw new Error(`${tier} child failed`);
    return new TextDecoder().decode(out.stdout).trim().split("\n");
  };
  const [baseline, optimized] = [await run("--liftoff-only"), await run("--no-liftoff")];
  const differ = baseline.filter((h, i) => h !== optimized[i]).length;
  console.log(`seed ${seed}: ${baseline.length} programs, ${differ} differ between Liftoff and the optimizing tier`);
  Deno.exit(differ === 0 && baseline.length === Number(programs) ? 0 : 1);
}

const u = (n: number): number[] => { const o = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; o.push(b); } while (n); return o; };
const s = (n: number): number[] => { const o = []; for (;;) { const b = n & 0x7f; n >>= 7; if ((n === 0 && !(b & 0x40)) || (n === -1 && (b & 0x40))) { o.push(b); return o; } o.push(b | 0x80); } };
const sec = (id: number, p: number[]) => [id, ...u(p.length), ...p];
const vec = (xs: number[][]) => [...u(xs.length), ...xs.flat()];
const get = (i: number) => [0x20, ...u(i)], set = (i: number) => [0x21, ...u(i)];
let seed = Number(Deno.args[0] ?? 1);
const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return ((seed >>> 8) % n); };
const NP = 4; // params: p0..p3 (i32 byte offsets into a 4 KiB arena); results stored at 8192
function program(): number[] {
  const nvals = 24 + rnd(40);
  const L0 = NP; // i64 locals from here
  const body: number[] = [];
  let have = 0;
  const addr = () => {
    // address expression: param + const, or param + (wrap(v) & 0xff8)
    const p = rnd(NP);
    if (have > 0 && rnd(3) === 0) return [...get(p), ...get(L0 + rnd(have)), 0xa7, 0x41, ...s(0xff8), 0x71, 0x6a];
    return [...get(p), 0x41, ...s(8 * rnd(64)), 0x6a];
  };
  const load = () => [...addr(), 0x29, 3, ...u(8 * rnd(4))];
  const operand = () => (have === 0 || rnd(2) === 0) ? load() : get(L0 + rnd(have));
  for (let i = 0; i < nvals; i++) {
    const k = rnd(5);
    if (k === 0) { body.push(...load(), ...set(L0 + have)); have++; }
    else if (k <= 3) {
      body.push(...operand(), ...operand(), 0xfc, 0x16, ...set(L0 + have + 1), ...set(L0 + have)); have += 2;
      if (rnd(3) === 0) { body.push(...addr(), ...get(L0 + have - 1), 0x37, 3, 0); } // interleaved store
    } else if (have >= 2) { body.push(...get(L0 + rnd(have)), ...get(L0 + rnd(have)), 0x7c, ...set(L0 + have)); have++; }
  }
  for (let i = 0; i < have; i++) body.push(0x41, ...s(8192 + 8 * i), ...get(L0 + i), 0x37, 3, 0);
  const locals = [[...u(have), 0x7e]];
  return [...vec(locals), ...body, 0x0b];
}
const I32 = 0x7f;
const hashes: string[] = [];
const N = Number(Deno.args[1] ?? 200);
for (let pi = 0; pi < N; pi++) {
  const code = program();
  const bytes = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...sec(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I32]]), 0]])),
    ...sec(3, vec([u(0)])), ...sec(5, vec([[0, 1]])),
    ...sec(7, vec([[1, 0x66, 0, 0], [1, 0x6d, 2, 0]])),
    ...sec(10, vec([[...u(code.length), ...code]]))]);
  const { instance } = await WebAssembly.instantiate(bytes);
  const f = instance.exports.f as (...a: number[]) => void;
  const mem = new Uint8Array((instance.exports.m as WebAssembly.Memory).buffer);
  let h = 0n;
  for (let call = 0; call < 400; call++) { // enough calls for the optimizing tier under default tiering
    for (let i = 0; i < 4096 + 512; i++) mem[i] = rnd(256);
    f(8 * rnd(64), 8 * rnd(64), 8 * rnd(64), 8 * rnd(64));
    const out = new BigUint64Array(mem.buffer, 8192, 256);
    for (const x of out) h = (h * 1000003n + x) & ((1n << 64n) - 1n);
  }
  hashes.push(h.toString(16));
}
console.log(hashes.join("\n"));
