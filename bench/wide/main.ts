/**
 * Signatures per CPU-second of the wide guest (wasm/signer-wide.wasm) against
 * the 32-bit guest (wasm/signer.wasm), in one Deno process, rounds
 * alternating between the two so a neighbour's load falls on both alike.
 * Prints a markdown table of medians and the ratio wide / 32-bit.
 *
 *   deno run --allow-read --allow-write --allow-run=openssl \
 *     --v8-flags=--experimental-wasm-wide-arithmetic bench/wide/main.ts [SECONDS_PER_ROUND] [ROUNDS] [A.wasm B.wasm]
 *
 * With two module paths it compares those instead (A in the "32-bit" column, B in "wide"), e.g. the
 * wide guest before and after a change.
 *
 * @module
 */

import process from "node:process";
import { Alg, FLAG_RS, Guest, opensslKey } from "./_host.ts";

const ROUND_SECONDS = Number(Deno.args[0] ?? 0.6);
const ROUNDS = Number(Deno.args[1] ?? 3);
const WARMUP_SECONDS = 1;

const MODULES = {
  "32-bit": Deno.args[2] ? new URL(Deno.args[2], `file://${Deno.cwd()}/`) : new URL("../../wasm/signer.wasm", import.meta.url),
  "wide": Deno.args[3] ? new URL(Deno.args[3], `file://${Deno.cwd()}/`) : new URL("../../wasm/signer-wide.wasm", import.meta.url),
};
type Build = keyof typeof MODULES;

const ROWS = [
  { name: "RSA-2048 PKCS#1", key: "rsa2048", alg: Alg.RSA_PKCS1_SHA256, digest: 32 },
  { name: "RSA-3072 PKCS#1", key: "rsa3072", alg: Alg.RSA_PKCS1_SHA256, digest: 32 },
  { name: "RSA-4096 PKCS#1", key: "rsa4096", alg: Alg.RSA_PKCS1_SHA256, digest: 32 },
  { name: "ECDSA P-256", key: "p256", alg: Alg.ECDSA_SHA256, digest: 32 },
  { name: "ECDSA P-384", key: "p384", alg: Alg.ECDSA_SHA384, digest: 48 },
] as const;

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Signs for `seconds` of wall time; returns signatures per CPU-second. */
function rate(sign: () => void, seconds: number): number {
  const c0 = cpuSeconds();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) {
    sign();
    n++;
  }
  return n / (cpuSeconds() - c0);
}

const median = (xs: number[]) => {
  const s = xs.toSorted((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const guests = Object.fromEntries(
  Object.entries(MODULES).map(([b, url]) => [b, new Guest(new WebAssembly.Module(Deno.readFileSync(url)))]),
) as Record<Build, Guest>;

console.log(`| op | 32-bit /CPU-s | wide /CPU-s | wide / 32-bit | rounds (32-bit; wide) |`);
console.log(`|---|---|---|---|---|`);
for (const row of ROWS) {
  const pem = opensslKey(row.key);
  const signers = Object.fromEntries(
    (Object.keys(guests) as Build[]).map((b) => {
      const g = guests[b];
      const { id } = g.load(pem);
      const digest = crypto.getRandomValues(new Uint8Array(row.digest));
      return [b, () => void g.sign(id, row.alg, digest, FLAG_RS)];
    }),
  ) as Record<Build, () => void>;
  for (const b of Object.keys(signers) as Build[]) rate(signers[b], WARMUP_SECONDS);
  const rounds: Record<Build, number[]> = { "32-bit": [], "wide": [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = (r % 2 ? ["wide", "32-bit"] : ["32-bit", "wide"]) as Build[];
    for (const b of order) rounds[b].push(rate(signers[b], ROUND_SECONDS));
  }
  const [n, w] = [median(rounds["32-bit"]), median(rounds.wide)];
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(" ");
  console.log(`| ${row.name} | ${n.toFixed(0)} | ${w.toFixed(0)} | ${(w / n).toFixed(2)}x | ${fmt(rounds["32-bit"])}; ${fmt(rounds.wide)} |`);
}
