/**
 * The crypto-core benchmark: signatures per second on one core, per algorithm and key size, for
 * the guest called directly in Deno against native OpenSSL (`openssl speed`), node:crypto and
 * Deno's WebCrypto. Every implementation is measured in every round, in a rotating order, so a
 * neighbour's load falls on all of them alike; the table quotes medians over rounds.
 *
 * @module
 */

import process from "node:process";
import { Compartment } from "../src/guest/compartment.ts";
import { openCompartment } from "../src/guest/files.ts";
import { ALGORITHM_CODES, encodeRequest, keyIdBytes, Op } from "../src/core/protocol.ts";
import type { AlgorithmName, KeySpec } from "../src/core/protocol.ts";
import { type FixtureKey, makeKeys, pkcs8Of } from "../test/_fixtures.ts";
import { median } from "./_stats.ts";
import { opensslSpeed } from "./_openssl_speed.ts";

/** One row of the table. */
export interface CoreRow {
  name: string;
  keySpec: KeySpec;
  algorithm: AlgorithmName;
  /** `openssl speed` has no PSS mode, so PSS rows have no openssl figure. */
  opensslName?: string;
}

/** Every row of the full run. */
export const CORE_ROWS: CoreRow[] = [
  { name: "RSA-2048 PKCS#1", keySpec: "RSA_2048", algorithm: "RSASSA_PKCS1_V1_5_SHA_256", opensslName: "rsa2048" },
  { name: "RSA-2048 PSS", keySpec: "RSA_2048", algorithm: "RSASSA_PSS_SHA_256" },
  { name: "RSA-3072 PKCS#1", keySpec: "RSA_3072", algorithm: "RSASSA_PKCS1_V1_5_SHA_256", opensslName: "rsa3072" },
  { name: "RSA-3072 PSS", keySpec: "RSA_3072", algorithm: "RSASSA_PSS_SHA_256" },
  { name: "RSA-4096 PKCS#1", keySpec: "RSA_4096", algorithm: "RSASSA_PKCS1_V1_5_SHA_256", opensslName: "rsa4096" },
  { name: "RSA-4096 PSS", keySpec: "RSA_4096", algorithm: "RSASSA_PSS_SHA_256" },
  { name: "ECDSA P-256", keySpec: "ECC_NIST_P256", algorithm: "ECDSA_SHA_256", opensslName: "ecdsap256" },
  { name: "ECDSA P-384", keySpec: "ECC_NIST_P384", algorithm: "ECDSA_SHA_384", opensslName: "ecdsap384" },
];

/** The implementations compared, by column. */
export const IMPLEMENTATIONS = ["guest", "openssl", "node", "webcrypto"] as const;
/** One of {@linkcode IMPLEMENTATIONS}. */
export type Implementation = typeof IMPLEMENTATIONS[number];

/** One measurement: signatures per wall-clock second and per second of CPU time. */
export interface Rate {
  wall: number;
  cpu: number;
}

/**
 * Medians per implementation, with every round's figures. Per CPU-second is the figure to compare
 * on a shared machine: a neighbour taking the core away lowers the wall-clock rate only.
 */
export interface CoreResult {
  row: string;
  opsPerSecond: Partial<Record<Implementation, number>>;
  opsPerCpuSecond: Partial<Record<Implementation, number>>;
  rounds: Partial<Record<Implementation, Rate[]>>;
  /** Why an implementation has no figure. */
  missing: Partial<Record<Implementation, string>>;
}

/** How long and how often to measure. */
export interface CoreOptions {
  wasm: Uint8Array;
  rows: CoreRow[];
  rounds: number;
  /** Seconds per implementation per row per round (openssl speed rounds up to whole seconds). */
  seconds: number;
  /** Where to put the keys (made with the openssl CLI). */
  workDir: string;
  /** The `node` binary; the column is left empty when it does not run. */
  node?: string;
  log?: (line: string) => void;
}

const HASH_OF: Record<string, "sha256" | "sha384" | "sha512"> = { "256": "sha256", "384": "sha384", "512": "sha512" };

/**
 * Runs the crypto-core table.
 *
 * @example
 * ```ts
 * const results = await runCore({ wasm, rows: CORE_ROWS, rounds: 3, seconds: 1, workDir });
 * ```
 */
export async function runCore(options: CoreOptions): Promise<CoreResult[]> {
  const log = options.log ?? (() => {});
  const specs = [...new Set(options.rows.map((r) => r.keySpec))];
  const keys = new Map((await makeKeys(options.workDir, specs)).map((k) => [k.keySpec, k]));
  const compartment = openCompartment({ wasm: options.wasm, keysDir: `${options.workDir}/keys` });
  const node = options.node && await runs(options.node) ? options.node : undefined;
  const results = options.rows.map((row): CoreResult => ({
    row: row.name,
    opsPerSecond: {},
    opsPerCpuSecond: {},
    rounds: {},
    missing: {
      ...(row.opensslName ? {} : { openssl: "openssl speed has no PSS mode" }),
      ...(node ? {} : { node: "node was not found" }),
    },
  }));

  for (let round = 0; round < options.rounds; round++) {
    for (const [i, row] of options.rows.entries()) {
      const key = keys.get(row.keySpec)!;
      // Rotate who goes first, so no implementation always runs right after the same neighbour.
      const order = IMPLEMENTATIONS.map((_, j) => IMPLEMENTATIONS[(j + round + i) % IMPLEMENTATIONS.length]);
      for (const impl of order) {
        if (results[i].missing[impl]) continue;
        let rate: Rate;
        try {
          rate = await measure(impl, row, key, compartment, node, options.seconds);
        } catch (err) {
          results[i].missing[impl] = (err as Error).message.split("\n")[0];
          continue;
        }
        (results[i].rounds[impl] ??= []).push(rate);
        log(`core round ${round + 1}/${options.rounds}: ${row.name} ${impl} ${rate.wall.toFixed(0)}/s, ${rate.cpu.toFixed(0)}/CPU-s`);
      }
    }
  }
  for (const result of results) {
    for (const impl of IMPLEMENTATIONS) {
      const rounds = result.rounds[impl];
      if (!rounds?.length) continue;
      result.opsPerSecond[impl] = median(rounds.map((r) => r.wall));
      result.opsPerCpuSecond[impl] = median(rounds.map((r) => r.cpu));
    }
  }
  return results;
}

function measure(
  impl: Implementation,
  row: CoreRow,
  key: FixtureKey,
  compartment: Compartment,
  node: string | undefined,
  seconds: number,
): Promise<Rate> {
  switch (impl) {
    case "guest":
      return Promise.resolve(guestRate(compartment, row, key, seconds));
    case "openssl":
      return opensslSpeed(row.opensslName!, seconds);
    case "node":
      return nodeRate(node!, row, key, seconds);
    case "webcrypto":
      return webCryptoRate(row, key, seconds);
  }
}

/** The digest length of a row's algorithm. */
function digestBytes(row: CoreRow): number {
  return Number(/(\d+)$/.exec(row.algorithm)![1]) / 8;
}

function guestRate(compartment: Compartment, row: CoreRow, key: FixtureKey, seconds: number): Rate {
  const request = encodeRequest(
    Op.SIGN,
    keyIdBytes(key.id)!,
    new Uint8Array([ALGORITHM_CODES[row.algorithm], 0]),
    new Uint8Array(digestBytes(row)).fill(7),
  );
  if (compartment.handle(request)[0] !== 0) throw new Error(`the guest refused ${row.name}`);
  const cpu = process.cpuUsage();
  const start = performance.now();
  const budget = seconds * 1000;
  let ops = 0;
  let elapsed = 0;
  while (elapsed < budget) {
    compartment.handle(request);
    ops++;
    elapsed = performance.now() - start;
  }
  return rateOf(ops, elapsed, process.cpuUsage(cpu));
}

function rateOf(ops: number, elapsedMs: number, cpu: { user: number; system: number }): Rate {
  return { wall: (ops * 1000) / elapsedMs, cpu: (ops * 1e6) / (cpu.user + cpu.system) };
}

async function nodeRate(node: string, row: CoreRow, key: FixtureKey, seconds: number): Promise<Rate> {
  const scheme = row.algorithm.startsWith("ECDSA") ? "ECDSA" : row.algorithm.includes("PSS") ? "PSS" : "PKCS1";
  const hash = HASH_OF[String(digestBytes(row) * 8)];
  const script = new URL("./_node_sign.mjs", import.meta.url).pathname;
  const out = await new Deno.Command(node, { args: [script, key.path, scheme, hash, String(seconds)], stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`node failed: ${new TextDecoder().decode(out.stderr)}`);
  const { ops, seconds: took, cpuSeconds } = JSON.parse(new TextDecoder().decode(out.stdout));
  return { wall: ops / took, cpu: ops / cpuSeconds };
}

async function webCryptoRate(row: CoreRow, key: FixtureKey, seconds: number): Promise<Rate> {
  const pkcs8 = await pkcs8Of(key.path);
  const hash = `SHA-${digestBytes(row) * 8}`;
  let importAs: RsaHashedImportParams | EcKeyImportParams;
  let signAs: AlgorithmIdentifier | RsaPssParams | EcdsaParams;
  if (row.keySpec.startsWith("ECC")) {
    importAs = { name: "ECDSA", namedCurve: row.keySpec === "ECC_NIST_P256" ? "P-256" : "P-384" };
    signAs = { name: "ECDSA", hash };
  } else if (row.algorithm.includes("PSS")) {
    importAs = { name: "RSA-PSS", hash };
    signAs = { name: "RSA-PSS", saltLength: digestBytes(row) };
  } else {
    importAs = { name: "RSASSA-PKCS1-v1_5", hash };
    signAs = { name: "RSASSA-PKCS1-v1_5" };
  }
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, importAs, false, ["sign"]);
  const message = new Uint8Array(digestBytes(row)).fill(7);
  await crypto.subtle.sign(signAs, privateKey, message);
  // Process-wide CPU time: it includes the thread pool WebCrypto signs on.
  const cpu = process.cpuUsage();
  const start = performance.now();
  const budget = seconds * 1000;
  let ops = 0;
  let elapsed = 0;
  while (elapsed < budget) {
    await crypto.subtle.sign(signAs, privateKey, message);
    ops++;
    elapsed = performance.now() - start;
  }
  return rateOf(ops, elapsed, process.cpuUsage(cpu));
}

async function runs(binary: string): Promise<boolean> {
  try {
    return (await new Deno.Command(binary, { args: ["--version"], stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}
