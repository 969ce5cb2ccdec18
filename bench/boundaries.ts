/**
 * The boundaries benchmark: one signature (ECDSA P-256, SHA-256 digest) through each layer in
 * turn — the guest called directly, `inline`, one `worker`, the pool of workers and, when the tree
 * has it, `process` — measured in rotating rounds in the same run.
 *
 * @module
 */

import process from "node:process";
import { openCompartment } from "../src/guest/files.ts";
import { ALGORITHM_CODES, encodeRequest, keyIdBytes, Op } from "../src/core/protocol.ts";
import { ProtocolSignerClient, type SignRequest, type Transport } from "../src/core/signer_client.ts";
import { InlineTransport, type StartOptions } from "../src/guest/inline.ts";
import { PoolTransport } from "../src/deno/pool.ts";
import { WorkerTransport } from "../src/deno/worker_transport.ts";
import { type Latency, latencyOf, median } from "./_stats.ts";

/** One layer's figures: medians over rounds for throughput, every round's samples for latency. */
export interface LayerResult {
  layer: string;
  /** Requests kept in flight at once. */
  concurrency: number;
  opsPerSecond?: number;
  rounds: number[];
  /**
   * CPU time this process spent per signature, all threads (µs, median over rounds): the price of
   * the layer, which a neighbour's load on the machine does not change.
   */
  cpuPerSignatureUs?: number;
  /** Per-signature latency in ms (for concurrency 1, the cost of one call through the layer). */
  latency?: Latency;
  /** Why the layer was not measured. */
  missing?: string;
}

/** What the boundaries run needs. */
export interface BoundaryOptions {
  wasm: Uint8Array;
  keysDir: string;
  /** Hex id of a P-256 key in `keysDir`. */
  keyId: string;
  /** Instances in the pool and parallel direct loops. */
  instances: number;
  /** In-flight requests for the concurrent rows. */
  concurrency: number;
  rounds: number;
  seconds: number;
  log?: (line: string) => void;
}

/** Runs `seconds` of direct guest calls on each of N workers at once; answers the summed rate. */
export class ParallelDirect {
  private constructor(readonly workers: Worker[], readonly request: Uint8Array) {}

  /**
   * Starts one direct-call worker per instance, each signing `request` (by default a P-256
   * signature with `keyId`).
   *
   * @example
   * ```ts
   * const direct = await ParallelDirect.start(wasm, keysDir, keyId, 2);
   * const opsPerSecond = await direct.run(1);
   * ```
   */
  static async start(
    wasm: Uint8Array,
    keysDir: string,
    keyId: string,
    instances: number,
    request: Uint8Array = p256SignRequest(keyId),
  ): Promise<ParallelDirect> {
    const workers = Array.from({ length: instances }, () =>
      new Worker(new URL("./_direct_worker.ts", import.meta.url), { type: "module" }));
    await Promise.all(workers.map((w) => ask(w, { wasm, keysDir })));
    return new ParallelDirect(workers, request);
  }

  async run(seconds: number): Promise<number> {
    const answers = await Promise.all(this.workers.map((w) => ask(w, { request: this.request, seconds })));
    return answers.reduce((sum, { ops, elapsedMs }) => sum + (ops * 1000) / elapsedMs, 0);
  }

  close(): void {
    for (const w of this.workers) w.terminate();
  }
}

// deno-lint-ignore no-explicit-any
function ask(worker: Worker, message: unknown): Promise<any> {
  return new Promise((resolve, reject) => {
    worker.onmessage = (e) => resolve(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(e.message));
    };
    worker.postMessage(message);
  });
}

/**
 * The protocol request the boundaries benchmark signs with.
 *
 * @example
 * ```ts
 * compartment.handle(p256SignRequest(keyId));
 * ```
 */
export function p256SignRequest(keyId: string): Uint8Array {
  return encodeRequest(Op.SIGN, keyIdBytes(keyId)!, new Uint8Array([ALGORITHM_CODES.ECDSA_SHA_256, 0]), new Uint8Array(32).fill(7));
}

interface Layer {
  name: string;
  concurrency: number;
  /** Runs for `seconds`; answers ops/s and each call's latency in ms. */
  run(seconds: number): Promise<{ rate: number; durations: number[] }>;
  close(): Promise<void> | void;
}

/**
 * Measures every available layer.
 *
 * @example
 * ```ts
 * const rows = await runBoundaries({ wasm, keysDir, keyId, instances: 2, concurrency: 16, rounds: 3, seconds: 1 });
 * ```
 */
export async function runBoundaries(options: BoundaryOptions): Promise<LayerResult[]> {
  const log = options.log ?? (() => {});
  const start: StartOptions = { wasm: options.wasm, keysDir: options.keysDir };
  const sign: SignRequest = { keyId: options.keyId, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(7) };
  const layers: Layer[] = [];
  const results: LayerResult[] = [];

  const compartment = openCompartment(start);
  const request = p256SignRequest(options.keyId);
  layers.push({
    name: "guest called directly (compartment.handle)",
    concurrency: 1,
    run: (seconds) => Promise.resolve(timeSync(seconds, () => compartment.handle(request))),
    close: () => {},
  });
  const direct = await ParallelDirect.start(options.wasm, options.keysDir, options.keyId, options.instances);
  layers.push({
    name: `guest called directly, ${options.instances} workers at once`,
    concurrency: options.instances,
    run: async (seconds) => ({ rate: await direct.run(seconds), durations: [] }),
    close: () => direct.close(),
  });
  const clientLayer = (name: string, transport: Transport, concurrency: number): Layer => signerLayer(name, new ProtocolSignerClient(transport), concurrency);
  const signerLayer = (name: string, client: Signer, concurrency: number): Layer => ({
    name,
    concurrency,
    run: (seconds) => timeAsync(seconds, concurrency, () => client.sign(sign)),
    close: () => {},
  });
  const inline = InlineTransport.start(start);
  layers.push(clientLayer("inline", inline, 1));
  const worker = await WorkerTransport.start(start);
  layers.push(clientLayer("worker (1 instance)", worker, 1));
  layers.push(clientLayer("worker (1 instance)", worker, options.concurrency));
  const pool = await PoolTransport.start(start, { instances: options.instances });
  layers.push(clientLayer(`worker pool (${options.instances} instances)`, pool, 1));
  layers.push(clientLayer(`worker pool (${options.instances} instances)`, pool, options.concurrency));
  const processLayer = await startProcessKeyService(options.keysDir);
  if (typeof processLayer === "string") {
    results.push({ layer: "process", concurrency: 1, rounds: [], missing: processLayer });
  } else {
    // The key server is another process: the CPU column counts only this, the host's, side.
    layers.push(signerLayer("process (CPU: host side only)", processLayer, 1));
    layers.push(signerLayer("process (CPU: host side only)", processLayer, options.concurrency));
  }

  const samples = layers.map(() => ({ rates: [] as number[], durations: [] as number[], cpu: [] as number[] }));
  try {
    for (const layer of layers) await layer.run(Math.min(0.3, options.seconds)); // warm-up: JIT, worker start
    for (let round = 0; round < options.rounds; round++) {
      for (let k = 0; k < layers.length; k++) {
        const i = (k + round) % layers.length;
        const cpuBefore = process.cpuUsage();
        const wallBefore = performance.now();
        const { rate, durations } = await layers[i].run(options.seconds);
        const cpu = process.cpuUsage(cpuBefore);
        const signatures = (rate * (performance.now() - wallBefore)) / 1000;
        samples[i].cpu.push((cpu.user + cpu.system) / signatures);
        samples[i].rates.push(rate);
        samples[i].durations.push(...durations);
        log(`boundaries round ${round + 1}/${options.rounds}: ${layers[i].name} x${layers[i].concurrency} ${rate.toFixed(0)}/s`);
      }
    }
  } finally {
    await Promise.all([...layers.map((l) => l.close()), inline.close(), worker.close(), pool.close()]);
    if (typeof processLayer !== "string") await processLayer.close();
  }
  const measured = layers.map((layer, i): LayerResult => ({
    layer: layer.name,
    concurrency: layer.concurrency,
    opsPerSecond: median(samples[i].rates),
    rounds: samples[i].rates,
    cpuPerSignatureUs: median(samples[i].cpu),
    latency: samples[i].durations.length ? latencyOf(samples[i].durations) : undefined,
  }));
  return [...measured, ...results];
}

function timeSync(seconds: number, call: () => unknown): { rate: number; durations: number[] } {
  const durations: number[] = [];
  const start = performance.now();
  let now = start;
  while (now - start < seconds * 1000) {
    call();
    const after = performance.now();
    durations.push(after - now);
    now = after;
  }
  return { rate: (durations.length * 1000) / (now - start), durations };
}

async function timeAsync(seconds: number, concurrency: number, call: () => Promise<unknown>) {
  const durations: number[] = [];
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let end = start;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < deadline) {
      const before = performance.now();
      await call();
      end = performance.now();
      durations.push(end - before);
    }
  }));
  return { rate: (durations.length * 1000) / (end - start), durations };
}

/** What a layer signs through. */
interface Signer {
  sign(request: SignRequest): Promise<Uint8Array>;
  close(): Promise<void>;
}

/**
 * The `process` mode's key service (a key server child over its Unix socket, the key directory
 * imported into its own store), when the tree has one: any export of src/deno/process_transport.ts
 * with a static `start(options)`. Answers why not otherwise.
 */
async function startProcessKeyService(keysDir: string): Promise<Signer | string> {
  const url = new URL("../src/deno/process_transport.ts", import.meta.url);
  try {
    await Deno.stat(url);
  } catch {
    return "not available: src/deno/process_transport.ts is not in this tree";
  }
  try {
    const mod = await import(url.href);
    const starter = Object.values(mod).find((v): v is { start(o: { keysDir: string }): Promise<Signer> } =>
      typeof v === "function" && typeof (v as { start?: unknown }).start === "function"
    );
    if (starter === undefined) return "not available: process_transport.ts exports no key service with start()";
    return await starter.start({ keysDir });
  } catch (err) {
    return `not available: ${(err as Error).message.split("\n")[0]}`;
  }
}
