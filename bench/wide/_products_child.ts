/**
 * Child of test/guest_wide_test.ts: runs random 128-bit products through the
 * exported functions of a rewritten test module and compares each with
 * BigInt. The parent picks V8's tier with flags. Prints one JSON object.
 *
 * Exports expected: `mul128(p)` and `mul64(p)`, reading a_lo, a_hi, b_lo,
 * b_hi at p..p+32 (mul64 ignores the high words) and writing the low 128
 * bits of the product at p+32; memory `m`.
 *
 * @module
 */

const [path, countArg] = Deno.args;
const COUNT = Number(countArg);
const { instance } = await WebAssembly.instantiate(Deno.readFileSync(path));
const mul128 = instance.exports.mul128 as (p: number) => void;
const mul64 = instance.exports.mul64 as (p: number) => void;
const words = new BigUint64Array((instance.exports.m as WebAssembly.Memory).buffer, 0, 6);

const M64 = (1n << 64n) - 1n;
const M128 = (1n << 128n) - 1n;
const EDGES = [0n, 1n, 2n, M64, 1n << 63n, (1n << 63n) - 1n, (1n << 32n) - 1n, 1n << 32n, M64 - 1n];
const rand = new BigUint64Array(4096);

let wrong = 0;
let checked = 0;
const examples: string[] = [];
for (let i = 0; i < COUNT; i++) {
  if (i % 1024 === 0) crypto.getRandomValues(rand);
  const pick = (k: number) => (i & 7) === 0 ? EDGES[((i >> 3) + k * 3) % EDGES.length] : rand[(i * 4 + k) % rand.length];
  const [aLo, aHi, bLo, bHi] = [pick(0), pick(1), pick(2), pick(3)];
  words[0] = aLo;
  words[1] = aHi;
  words[2] = bLo;
  words[3] = bHi;
  const wide = (i & 1) === 0;
  if (wide) mul128(0);
  else mul64(0);
  const want = wide ? (((aHi << 64n) | aLo) * ((bHi << 64n) | bLo)) & M128 : aLo * bLo;
  const got = (words[5] << 64n) | words[4];
  checked++;
  if (got !== want) {
    wrong++;
    if (examples.length < 5) examples.push(`${wide ? "mul128" : "mul64"} ${aHi}:${aLo} * ${bHi}:${bLo} = ${got}, want ${want}`);
  }
}
console.log(JSON.stringify({ checked, wrong, examples }));
