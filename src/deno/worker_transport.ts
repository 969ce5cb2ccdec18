/**
 * The `worker` transport (the default): the compartment runs in a Deno Worker, a separate V8
 * isolate whose only permissions are reading the key directory and the master key file (or the one
 * environment variable holding the master key).
 *
 * A worker that dies, or does not answer within its time, is replaced; the requests it held
 * answer `UNAVAILABLE` and later ones go to the new worker.
 *
 * @module
 */

import type { KeyFileReport } from "../core/protocol.ts";
import type { WorkerInit } from "../guest/worker.ts";
import { encodeResponse, Op, Status } from "../core/protocol.ts";
import { ByteRing } from "../guest/ring.ts";
import type { Transport } from "../core/signer_client.ts";
import type { StartOptions } from "../guest/inline.ts";

/** How long one request may take before the worker is presumed stuck, and how big its rings are. */
export interface WorkerSettings {
  /** For every operation but key generation. Default 10 s. */
  requestMs?: number;
  /** For key generation (RSA-4096 in wasm takes seconds). Default 120 s. */
  generateMs?: number;
  /**
   * Bytes of each of the two rings (a power of two). Default 1 MiB: far above the largest message
   * (64 KiB), so a slow reader rarely holds up a writer.
   */
  ringBytes?: number;
}

interface Pending {
  resolve(response: Uint8Array): void;
  /** `performance.now()` past which the worker is presumed stuck. */
  deadline: number;
}

const WORKER_URL = new URL("../guest/worker.ts", import.meta.url);

/**
 * Runs the compartment in a Worker isolate. Requests and answers travel through two
 * {@linkcode ByteRing}s in shared memory; the host's side never blocks.
 *
 * @example
 * ```ts
 * import { WorkerTransport } from "./worker_transport.ts";
 *
 * async function start(wasm: Uint8Array): Promise<WorkerTransport> {
 *   return await WorkerTransport.start({ wasm, keysDir: ".keycell/keys" });
 * }
 * ```
 */
export class WorkerTransport implements Transport {
  readonly mode = "worker";
  readonly #options: StartOptions;
  readonly #settings: Required<WorkerSettings>;
  /** In the order sent, which is the order the worker answers in. */
  readonly #pending = new Map<number, Pending>();
  /** Requests that did not fit in the ring yet. */
  #backlog: { id: number; request: Uint8Array }[] = [];
  #worker!: Worker;
  #requests!: ByteRing;
  #answers!: ByteRing;
  #ready!: Promise<void>;
  /** Whether `#ready` has resolved for the current worker. */
  #started = false;
  #listening = false;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  /** The deadline `#watchdog` was set for. */
  #watchdogAt = 0;
  #nextId = 1;
  #closed = false;
  /** What loading the key directory did, as the current worker reported it. */
  keyFiles: readonly KeyFileReport[] = [];
  /** How many times a worker was replaced. */
  restarts = 0;

  private constructor(options: StartOptions, settings: WorkerSettings) {
    this.#options = options;
    this.#settings = { requestMs: 10_000, generateMs: 120_000, ringBytes: 1 << 20, ...settings };
  }

  /** Starts the worker and waits until its guest has loaded the key directory. */
  static async start(options: StartOptions, settings: WorkerSettings = {}): Promise<WorkerTransport> {
    const transport = new WorkerTransport(options, settings);
    transport.#spawn();
    await transport.#ready;
    return transport;
  }

  request(request: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) return Promise.resolve(encodeResponse(Status.UNAVAILABLE));
    // Until the current worker is up (at start, or after a replacement), requests wait for it.
    if (!this.#started) {
      return this.#ready.then(() => this.request(request), () => encodeResponse(Status.UNAVAILABLE));
    }
    if (request.length > this.#requests.maxPayload) return Promise.resolve(encodeResponse(Status.BAD_REQUEST));
    const id = this.#nextId;
    // A ring carries a tag as 32 bits: ids wrap there, long before any could still be pending.
    this.#nextId = (id + 1) >>> 0;
    const timeout = request[0] === Op.GENERATE ? this.#settings.generateMs : this.#settings.requestMs;
    const answer = new Promise<Uint8Array>((resolve) => this.#pending.set(id, { resolve, deadline: performance.now() + timeout }));
    if (this.#backlog.length > 0 || !this.#requests.write(id, request)) this.#backlog.push({ id, request });
    this.#listen();
    this.#watch();
    return answer;
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#stop();
    this.#failPending();
    return Promise.resolve();
  }

  /** Reads answers while any request waits for one; at most one such loop runs. */
  async #listen(): Promise<void> {
    if (this.#listening) return;
    this.#listening = true;
    try {
      while (this.#pending.size > 0) {
        const answers = this.#answers;
        await answers.message();
        // A worker replaced meanwhile has already failed its requests; the next round reads the new one.
        if (answers !== this.#answers) continue;
        let message;
        while ((message = answers.read()) !== undefined) this.#answer(message.tag, message.bytes);
        while (this.#backlog.length > 0 && this.#requests.write(this.#backlog[0].id, this.#backlog[0].request)) {
          this.#backlog.shift();
        }
      }
    } finally {
      this.#listening = false;
    }
  }

  /**
   * Keeps one timer for the oldest request rather than one per request: the worker answers in
   * order, so if the oldest is overdue the worker is stuck, and it is replaced. The timer is not
   * cleared when the last answer comes (under load that would be a timer made and cleared for
   * every request): it runs out, finds the next oldest request or none, and is set again or not.
   */
  #watch(): void {
    const oldest = this.#pending.values().next().value;
    if (oldest === undefined) return;
    if (this.#watchdog !== undefined) {
      // Set for a request answered since, which may have had more time than the oldest one now.
      if (this.#watchdogAt <= oldest.deadline) return;
      clearTimeout(this.#watchdog);
    }
    this.#watchdogAt = oldest.deadline;
    this.#watchdog = setTimeout(() => {
      this.#watchdog = undefined;
      const head = this.#pending.values().next().value;
      if (head !== undefined && performance.now() >= head.deadline) this.#replace(this.#worker);
      this.#watch();
    }, Math.max(0, oldest.deadline - performance.now()));
  }

  #spawn(): void {
    const { keysDir, masterKeyPath, masterKeyEnv, createMasterKey, cacheBytes } = this.#options;
    const readable = [keysDir, masterKeyPath].filter((p) => p !== undefined);
    const worker = new Worker(WORKER_URL, {
      type: "module",
      deno: {
        permissions: {
          read: readable.length === 0 ? false : readable,
          // Only the worker that makes the master key on a first start may write, and only that file.
          write: createMasterKey && masterKeyPath !== undefined ? [masterKeyPath] : false,
          net: false,
          // A master key held in an environment variable is read by the worker, never by the host.
          env: masterKeyEnv === undefined ? false : [masterKeyEnv],
          run: false,
          ffi: false,
          sys: false,
          import: false,
        },
      },
    });
    const requests = ByteRing.allocate(this.#settings.ringBytes);
    const answers = ByteRing.allocate(this.#settings.ringBytes);
    this.#worker = worker;
    this.#requests = new ByteRing(requests);
    this.#answers = new ByteRing(answers);
    this.#started = false;
    this.#ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent) => {
        const data = event.data;
        if ("ready" in data) {
          if (worker === this.#worker) this.#started = true;
          this.keyFiles = data.ready;
          resolve();
        } else {
          reject(new Error(`the signer worker did not start: ${data.failed}`));
        }
      };
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        reject(new Error(`the signer worker failed: ${event.message}`));
        // A worker that cannot start would fail again at once: stay unavailable rather than spin.
        // (#replace ignores a worker that is no longer the current one.)
        if (this.#started) this.#replace(worker);
      };
    });
    // Unhandled until the first request awaits it; a failed start is reported there.
    this.#ready.catch(() => {});
    const init: WorkerInit = { wasm: this.#options.wasm, rsaWasm: this.#options.rsaWasm, keysDir, masterKeyPath, masterKeyEnv, createMasterKey, cacheBytes, requests, answers };
    worker.postMessage(init);
  }

  #answer(id: number, response: Uint8Array): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    pending.resolve(response);
  }

  #replace(worker: Worker): void {
    if (worker !== this.#worker || this.#closed) return;
    this.#stop();
    this.#failPending();
    this.restarts++;
    this.#spawn();
  }

  /** Stops the current worker: it returns once its guest call ends, and the host stops listening. */
  #stop(): void {
    this.#requests.close();
    this.#answers.close();
    this.#worker.terminate();
  }

  #failPending(): void {
    for (const { resolve } of this.#pending.values()) resolve(encodeResponse(Status.UNAVAILABLE));
    this.#pending.clear();
    this.#backlog = [];
    this.#stopWatching();
  }

  #stopWatching(): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
  }
}
