/**
 * The `wasmtime` engine (KEYCELL_ENGINE=wasmtime): the same guest bytes run in wasmtime
 * (Cranelift, wide arithmetic on) in a child process, `rust-signer/wasmtime-host`, which does
 * what the compartment does (the six imports, the self-test at every instantiation, the master key
 * and key files read straight into the guest, re-instantiation after a trap) and carries the
 * compartment's protocol frames over its stdin and stdout. This process never holds key bytes:
 * the child reads the master key file and the key directory itself.
 *
 * A child that exits, or does not answer within its time, is replaced; the requests it held
 * answer `UNAVAILABLE` and later ones go to the new child.
 *
 * @module
 */

import { decodeKeyRecord, encodeResponse, type KeyFileReport, Op, Status } from "../core/protocol.ts";
import type { Transport } from "../core/signer_client.ts";
import type { StartOptions } from "../guest/inline.ts";
import { SELF_TEST_DIGEST, SELF_TEST_KEYS } from "../guest/self_test.ts";

/** The host binary `scripts/build-wasmtime-host.sh` builds. */
export const WASMTIME_HOST = new URL("../../rust-signer/target/wasmtime-host/release/keycell-wasmtime-host", import.meta.url).pathname;

/** How long one request may take before the child is presumed stuck. */
export interface WasmtimeSettings {
  /** For every operation but key generation. Default 10 s. */
  requestMs?: number;
  /** For key generation (RSA-4096 takes seconds). Default 120 s. */
  generateMs?: number;
  /** The host binary; {@linkcode WASMTIME_HOST} by default. */
  hostPath?: string;
}

interface Pending {
  resolve(response: Uint8Array): void;
  deadline: number;
}

interface Child {
  process: Deno.ChildProcess;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  frames: FrameReader;
}

/**
 * A guest in a wasmtime child process.
 *
 * @example
 * ```ts
 * import { WasmtimeTransport } from "./wasmtime_transport.ts";
 *
 * async function start(wasm: Uint8Array): Promise<WasmtimeTransport> {
 *   return await WasmtimeTransport.start({ wasm, masterKeyPath: ".keycell/master.key" });
 * }
 * ```
 */
export class WasmtimeTransport implements Transport {
  readonly mode = "wasmtime";
  readonly #options: StartOptions;
  readonly #settings: Required<WasmtimeSettings>;
  /** In the order sent, which is the order the child answers in. */
  readonly #pending: Pending[] = [];
  #child!: Child;
  #ready!: Promise<void>;
  #started = false;
  #closed = false;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  /** What loading the key directory did, as the current child reported it. */
  keyFiles: readonly KeyFileReport[] = [];
  /** How many times a child was replaced. */
  restarts = 0;

  private constructor(options: StartOptions, settings: WasmtimeSettings) {
    this.#options = options;
    this.#settings = { requestMs: 10_000, generateMs: 120_000, hostPath: WASMTIME_HOST, ...settings };
  }

  /** Starts the child and waits until its guest has passed its self-test and loaded the key directory. */
  static async start(options: StartOptions, settings: WasmtimeSettings = {}): Promise<WasmtimeTransport> {
    const transport = new WasmtimeTransport(options, settings);
    transport.#spawn();
    try {
      await transport.#ready;
    } catch (err) {
      await transport.close();
      throw err;
    }
    return transport;
  }

  /** The child's process id (for the isolation tests). */
  get pid(): number {
    return this.#child.process.pid;
  }

  request(request: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) return Promise.resolve(encodeResponse(Status.UNAVAILABLE));
    if (!this.#started) {
      return this.#ready.then(() => this.request(request), () => encodeResponse(Status.UNAVAILABLE));
    }
    const timeout = request[0] === Op.GENERATE ? this.#settings.generateMs : this.#settings.requestMs;
    const answer = new Promise<Uint8Array>((resolve) => this.#pending.push({ resolve, deadline: performance.now() + timeout }));
    this.#child.writer.write(frame(request)).catch(() => {});
    this.#watch();
    return answer;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#failPending();
    await this.#stop(this.#child);
  }

  #spawn(): void {
    const { keysDir, masterKeyPath, masterKeyEnv, createMasterKey, cacheBytes } = this.#options;
    if (masterKeyEnv !== undefined) throw new Error("the wasmtime engine reads the master key from a file, not from an environment variable");
    const args = [
      ...(masterKeyPath !== undefined ? ["--master-key", masterKeyPath] : []),
      ...(createMasterKey ? ["--create-master-key"] : []),
      ...(keysDir !== undefined ? ["--keys", keysDir] : []),
      ...(cacheBytes !== undefined ? ["--cache-bytes", String(cacheBytes)] : []),
    ];
    let process: Deno.ChildProcess;
    try {
      process = new Deno.Command(this.#settings.hostPath, { args, stdin: "piped", stdout: "piped", stderr: "inherit" }).spawn();
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      throw new Error(`the wasmtime host ${this.#settings.hostPath} is not built; run ./keycell build:wasmtime-host`);
    }
    const child: Child = { process, writer: process.stdin.getWriter(), frames: new FrameReader(process.stdout) };
    this.#child = child;
    this.#started = false;
    this.#ready = (async () => {
      child.writer.write(frame(initFrame(this.#options.wasm))).catch(() => {});
      const ready = await child.frames.next();
      if (ready === undefined) throw new Error("the wasmtime host exited before it was ready");
      if (ready[0] !== 0) throw new Error(new TextDecoder().decode(ready.subarray(1)));
      if (child === this.#child) {
        this.keyFiles = decodeReport(ready.subarray(1));
        this.#started = true;
      }
      void this.#listen(child);
    })();
    this.#ready.catch(() => {});
    process.status.then(() => {
      if (child === this.#child && this.#started) this.#replace(child);
    });
  }

  /** Hands each answer to the oldest pending request, until the child's output ends. */
  async #listen(child: Child): Promise<void> {
    for (;;) {
      const response = await child.frames.next();
      if (response === undefined || child !== this.#child) return;
      const pending = this.#pending.shift();
      if (this.#pending.length === 0) this.#stopWatching();
      pending?.resolve(response);
    }
  }

  /** One timer for the oldest request: the child answers in order, so an overdue head means it is stuck. */
  #watch(): void {
    if (this.#watchdog !== undefined) return;
    const oldest = this.#pending[0];
    if (oldest === undefined) return;
    this.#watchdog = setTimeout(() => {
      this.#watchdog = undefined;
      const head = this.#pending[0];
      if (head !== undefined && performance.now() >= head.deadline) this.#replace(this.#child);
      this.#watch();
    }, Math.max(0, oldest.deadline - performance.now()));
  }

  #replace(child: Child): void {
    if (child !== this.#child || this.#closed) return;
    void this.#stop(child);
    this.#failPending();
    this.restarts++;
    this.#spawn();
  }

  async #stop(child: Child): Promise<void> {
    try {
      child.process.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.writer.close().catch(() => {});
    await child.frames.cancel();
    await child.process.status;
  }

  #failPending(): void {
    for (const { resolve } of this.#pending.splice(0)) resolve(encodeResponse(Status.UNAVAILABLE));
    this.#stopWatching();
  }

  #stopWatching(): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
  }
}

/** `length (u32 LE) || bytes`. */
function frame(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + bytes.length);
  new DataView(out.buffer).setUint32(0, bytes.length, true);
  out.set(bytes, 4);
  return out;
}

/** The module and the self-test's known answers (public test vectors), as the host reads them. */
function initFrame(wasm: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const u32 = (n: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n, true);
    parts.push(b);
  };
  const bytes = (b: Uint8Array) => {
    u32(b.length);
    parts.push(b);
  };
  bytes(wasm);
  bytes(SELF_TEST_DIGEST);
  parts.push(new Uint8Array([SELF_TEST_KEYS.length]));
  for (const key of SELF_TEST_KEYS) {
    bytes(new TextEncoder().encode(key.name));
    bytes(key.der);
    parts.push(key.id, new Uint8Array([key.alg]));
    bytes(key.signature ?? new Uint8Array(0));
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The host's key file report: `count (u32)` then `kind (1) || name || payload`, each length-prefixed. */
function decodeReport(body: Uint8Array): KeyFileReport[] {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const count = view.getUint32(0, true);
  const report: KeyFileReport[] = [];
  let at = 4;
  const take = () => {
    const len = view.getUint32(at, true);
    const out = body.subarray(at + 4, at + 4 + len);
    at += 4 + len;
    return out;
  };
  for (let i = 0; i < count; i++) {
    const kind = body[at++];
    const file = new TextDecoder().decode(take());
    const payload = take();
    if (kind !== 0) {
      report.push({ file, error: new TextDecoder().decode(payload) });
      continue;
    }
    const record = decodeKeyRecord(payload);
    report.push(record === undefined ? { file, error: "bad record" } : { file, id: record.id, keySpec: record.keySpec, ...(record.sealed ? { sealed: record.sealed } : {}) });
  }
  return report;
}

/** Splits a byte stream into `length (u32 LE) || bytes` frames. */
class FrameReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer: Uint8Array = new Uint8Array(0);

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** The next frame, or `undefined` at the end of the stream. */
  async next(): Promise<Uint8Array | undefined> {
    for (;;) {
      if (this.#buffer.length >= 4) {
        const len = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, 4).getUint32(0, true);
        if (this.#buffer.length >= 4 + len) {
          const out = this.#buffer.slice(4, 4 + len);
          this.#buffer = this.#buffer.subarray(4 + len);
          return out;
        }
      }
      const { value, done } = await this.#reader.read().catch(() => ({ value: undefined, done: true }));
      if (done || value === undefined) return undefined;
      this.#buffer = this.#buffer.length === 0 ? value : concat(this.#buffer, value);
    }
  }

  cancel(): Promise<void> {
    return this.#reader.cancel().catch(() => {});
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
