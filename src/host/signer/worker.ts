/**
 * The `worker` transport (the default): the compartment runs in a Deno Worker, a separate V8
 * isolate whose only permissions are reading the key directory and the master key file.
 *
 * A worker that dies, or does not answer within its time, is replaced; the requests it held
 * answer `UNAVAILABLE` and later ones go to the new worker.
 *
 * @module
 */

import type { KeyFileReport } from "../../guest/compartment.ts";
import type { WorkerInit } from "../../guest/worker.ts";
import { encodeResponse, Op, Status } from "../../guest/protocol.ts";
import type { Transport } from "./client.ts";
import type { StartOptions } from "./inline.ts";

/** How long one request may take before the worker is presumed stuck. */
export interface WorkerTimeouts {
  /** For every operation but key generation. Default 10 s. */
  requestMs?: number;
  /** For key generation (RSA-4096 in wasm takes seconds). Default 120 s. */
  generateMs?: number;
}

interface Pending {
  resolve(response: Uint8Array): void;
  timer: ReturnType<typeof setTimeout>;
}

const WORKER_URL = new URL("../../guest/worker.ts", import.meta.url);

/**
 * Runs the compartment in a Worker isolate.
 *
 * @example
 * ```ts
 * const transport = await WorkerTransport.start({ wasm, keysDir: ".keycell/keys" });
 * ```
 */
export class WorkerTransport implements Transport {
  readonly mode = "worker";
  readonly #options: StartOptions;
  readonly #timeouts: Required<WorkerTimeouts>;
  readonly #pending = new Map<number, Pending>();
  #outbox: { id: number; request: Uint8Array }[] = [];
  #worker!: Worker;
  #ready!: Promise<void>;
  #nextId = 1;
  #closed = false;
  /** What loading the key directory did, as the current worker reported it. */
  keyFiles: readonly KeyFileReport[] = [];
  /** How many times a worker was replaced. */
  restarts = 0;

  private constructor(options: StartOptions, timeouts: WorkerTimeouts) {
    this.#options = options;
    this.#timeouts = { requestMs: 10_000, generateMs: 120_000, ...timeouts };
  }

  /** Starts the worker and waits until its guest has loaded the key directory. */
  static async start(options: StartOptions, timeouts: WorkerTimeouts = {}): Promise<WorkerTransport> {
    const transport = new WorkerTransport(options, timeouts);
    transport.#spawn();
    await transport.#ready;
    return transport;
  }

  async request(request: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) return encodeResponse(Status.UNAVAILABLE);
    try {
      await this.#ready;
    } catch {
      return encodeResponse(Status.UNAVAILABLE);
    }
    const id = this.#nextId++;
    const worker = this.#worker;
    const timeout = request[0] === Op.GENERATE ? this.#timeouts.generateMs : this.#timeouts.requestMs;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#replace(worker), timeout);
      this.#pending.set(id, { resolve, timer });
      this.#post(worker, { id, request });
    });
  }

  /** Queues a request; everything queued in the same turn of the event loop goes as one message. */
  #post(worker: Worker, item: { id: number; request: Uint8Array }): void {
    if (this.#outbox.length === 0) {
      queueMicrotask(() => {
        const batch = this.#outbox;
        this.#outbox = [];
        // A worker replaced meanwhile has already failed these requests.
        if (worker === this.#worker) worker.postMessage(batch);
      });
    }
    this.#outbox.push(item);
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#worker.terminate();
    this.#failPending();
    return Promise.resolve();
  }

  #spawn(): void {
    const { keysDir, masterKeyPath, createMasterKey, cacheBytes } = this.#options;
    const readable = [keysDir, masterKeyPath].filter((p) => p !== undefined);
    const worker = new Worker(WORKER_URL, {
      type: "module",
      deno: {
        permissions: {
          read: readable.length === 0 ? false : readable,
          // Only the worker that makes the master key on a first start may write, and only that file.
          write: createMasterKey && masterKeyPath !== undefined ? [masterKeyPath] : false,
          net: false,
          env: false,
          run: false,
          ffi: false,
          sys: false,
          import: false,
        },
      },
    });
    this.#worker = worker;
    let started = false;
    this.#ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent) => {
        const data = event.data;
        if ("ready" in data) {
          started = true;
          this.keyFiles = data.ready;
          worker.onmessage = (e: MessageEvent) => {
            for (const answer of e.data as { id: number; response: Uint8Array }[]) this.#answer(answer);
          };
          resolve();
        } else {
          reject(new Error(`the signer worker did not start: ${data.failed}`));
        }
      };
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        reject(new Error(`the signer worker failed: ${event.message}`));
        // A worker that cannot start would fail again at once: stay unavailable rather than spin.
        if (started) this.#replace(worker);
      };
    });
    // Unhandled until the first request awaits it; a failed start is reported there.
    this.#ready.catch(() => {});
    const init: WorkerInit = { wasm: this.#options.wasm, keysDir, masterKeyPath, createMasterKey, cacheBytes };
    worker.postMessage(init);
  }

  #answer({ id, response }: { id: number; response: Uint8Array }): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    pending.resolve(response);
  }

  #replace(worker: Worker): void {
    if (worker !== this.#worker || this.#closed) return;
    worker.terminate();
    this.#failPending();
    this.restarts++;
    this.#spawn();
  }

  #failPending(): void {
    for (const { resolve, timer } of this.#pending.values()) {
      clearTimeout(timer);
      resolve(encodeResponse(Status.UNAVAILABLE));
    }
    this.#pending.clear();
  }
}
