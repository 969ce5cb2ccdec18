/**
 * Several guest instances behind one {@linkcode Transport}, so every core signs.
 *
 * Each instance (by default a {@linkcode WorkerTransport}) loads the whole key directory, so any of
 * them can sign with those keys. A key generated in the guest exists only in the instance that
 * made it: key bytes never leave a guest, so they cannot be copied to another. The pool therefore
 * routes every request that names a key to an instance holding it (the least busy one), answers
 * LIST with the union of every instance's keys, and forgets what an instance held whenever that
 * instance is re-created (a trap or a replaced worker reloads only the key directory).
 *
 * A pool may also hold a guest in this isolate ({@linkcode PoolOptions.inlineWhen}): a request
 * handed to a worker crosses two threads, which costs more than a P-256 signature when requests
 * come one at a time. That guest takes a keyed request only when it is the only one in progress,
 * so one request at a time goes as fast as in `inline` mode and a queue still spreads over every
 * worker. Keys opened or made in a worker are opened in it too, from their sealed blobs.
 *
 * @module
 */

import {
  decodeKeyList,
  decodeKeyRecord,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  KEY_ID_BYTES,
  keyIdBytes,
  mergeKeyLists,
  Op,
  Status,
  toHex,
  WRAPPING_KEY_SPEC,
} from "../core/protocol.ts";
import type { KeyFileReport } from "../core/protocol.ts";
import type { Transport } from "../core/signer_client.ts";
import { InlineTransport, type StartOptions } from "../guest/inline.ts";
import { type WorkerSettings, WorkerTransport } from "./worker_transport.ts";

/** One instance the pool can use: a transport, and how often it has replaced its worker, if it has one. */
export interface PoolMember extends Transport {
  readonly keyFiles: readonly KeyFileReport[];
  readonly restarts?: number;
}

/** How the pool is made. */
export interface PoolOptions {
  /** How many instances; at least 1. */
  instances: number;
  /** Passed to each worker. */
  worker?: WorkerSettings;
  /** Starts one instance; a {@linkcode WorkerTransport} unless a test says otherwise. */
  startMember?: (options: StartOptions) => Promise<PoolMember>;
  /**
   * Also runs a guest in this isolate, and gives it a request that names a key it holds when this
   * answers true: when the caller knows the request is the only one in progress (a key server's
   * scheduler does; `workersIdle` says whether the workers have nothing in flight), or that it
   * is to be answered at once, beside the workers' queues (a key server's express call). The
   * caller keeps it to a share of the requests, so it never holds up this isolate's event loop
   * for long while workers wait.
   */
  inlineWhen?: (workersIdle: boolean) => boolean;
  /** Starts the guest in this isolate; an {@linkcode InlineTransport} unless a test says otherwise. */
  startInline?: (options: StartOptions) => PoolMember;
}

interface Member {
  transport: PoolMember;
  /** Lowercase hex ids of the keys this instance holds, as far as the pool has seen. */
  keys: Set<string>;
  outstanding: number;
  restartsSeen: number;
  refreshing?: Promise<void>;
  /** The guest in this isolate, used only when {@linkcode PoolOptions.inlineWhen} says so. */
  inline: boolean;
}

/** Operations whose request starts with the key id they act on. */
const KEYED_OPS = new Set<number>([Op.PUBLIC_KEY, Op.SIGN, Op.DROP]);

/**
 * A pool of guest instances with key-aware routing.
 *
 * @example
 * ```ts
 * import { ProtocolSignerClient } from "../core/signer_client.ts";
 * import { PoolTransport } from "./pool.ts";
 *
 * async function start(wasm: Uint8Array): Promise<ProtocolSignerClient> {
 *   const pool = await PoolTransport.start({ wasm, keysDir: ".keycell/keys" }, { instances: navigator.hardwareConcurrency });
 *   return new ProtocolSignerClient(pool);
 * }
 * ```
 */
export class PoolTransport implements Transport {
  readonly mode: string;
  /** Every instance, the one in this isolate (if any) last. */
  readonly #members: Member[];
  /** The workers: every instance but the one in this isolate. */
  readonly #workers: Member[];
  readonly #inline: Member | undefined;
  readonly #inlineWhen: (workersIdle: boolean) => boolean;
  #nextStart = 0;

  private constructor(members: PoolMember[], inline: PoolMember | undefined, inlineWhen: (workersIdle: boolean) => boolean) {
    this.mode = members[0].mode;
    const member = (transport: PoolMember, inline: boolean): Member => ({
      transport,
      keys: new Set<string>(),
      outstanding: 0,
      restartsSeen: transport.restarts ?? 0,
      inline,
    });
    this.#workers = members.map((transport) => member(transport, false));
    this.#inline = inline === undefined ? undefined : member(inline, true);
    this.#members = this.#inline === undefined ? this.#workers : [...this.#workers, this.#inline];
    this.#inlineWhen = inlineWhen;
  }

  /** Starts every instance at once and learns which keys each one holds. */
  static async start(options: StartOptions, pool: PoolOptions): Promise<PoolTransport> {
    if (!Number.isSafeInteger(pool.instances) || pool.instances < 1) {
      throw new RangeError(`a signer pool needs at least one instance, not ${pool.instances}`);
    }
    const startMember = pool.startMember ?? ((o: StartOptions) => WorkerTransport.start(o, pool.worker));
    const started = await Promise.allSettled(Array.from({ length: pool.instances }, () => startMember(options)));
    const members = started.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
    const failure = started.find((s) => s.status === "rejected");
    if (failure !== undefined) {
      await Promise.all(members.map((m) => m.close()));
      throw failure.reason;
    }
    let inline: PoolMember | undefined;
    if (pool.inlineWhen !== undefined) {
      try {
        inline = (pool.startInline ?? InlineTransport.start)(options);
      } catch (err) {
        await Promise.all(members.map((m) => m.close()));
        throw err;
      }
    }
    const transport = new PoolTransport(members, inline, pool.inlineWhen ?? (() => false));
    await Promise.all(transport.#members.map((m) => transport.#refresh(m)));
    return transport;
  }

  /** How many workers the pool runs (not counting a guest in this isolate). */
  get instances(): number {
    return this.#workers.length;
  }

  /** What loading the key directory did (every instance loads the same directory). */
  get keyFiles(): readonly KeyFileReport[] {
    return this.#members[0].transport.keyFiles;
  }

  /** Requests each worker has in flight, by worker. */
  get outstanding(): number[] {
    return this.#workers.map((m) => m.outstanding);
  }

  /** Requests the guest in this isolate has answered, and keys it holds (for tests and metrics). */
  get inline(): { keys: number } | undefined {
    return this.#inline === undefined ? undefined : { keys: this.#inline.keys.size };
  }

  request(request: Uint8Array): Promise<Uint8Array> {
    const op = request[0];
    if (KEYED_OPS.has(op) && request.length > KEY_ID_BYTES) {
      const id = toHex(request.subarray(1, 1 + KEY_ID_BYTES));
      return op === Op.DROP ? this.#drop(request) : this.#keyed(id, request);
    }
    if (op === Op.LIST) return this.#list(request);
    if (op === Op.HEALTH) return this.#everyone(request);
    // Each of these answers the record of a key the instance now holds.
    if (op === Op.GENERATE || op === Op.UNSEAL || op === Op.IMPORT) return this.#generate(request);
    // TRAP, unknown operations and malformed requests: any worker gives the answer.
    return this.#send(this.#leastBusy(this.#workers), request);
  }

  async close(): Promise<void> {
    await Promise.all(this.#members.map((m) => m.transport.close()));
  }

  #keyed(id: string, request: Uint8Array): Promise<Uint8Array> {
    const inline = this.#inline;
    if (inline !== undefined && inline.keys.has(id) && this.#inlineWhen(this.#workers.every((m) => m.outstanding === 0))) {
      return this.#send(inline, request);
    }
    const holders = this.#workers.filter((m) => m.keys.has(id));
    if (holders.length === 0) {
      // A key only the guest in this isolate holds (the workers' caches let it go) is still served.
      if (inline?.keys.has(id)) return this.#send(inline, request);
      return Promise.resolve(encodeResponse(Status.KEY_NOT_FOUND));
    }
    return this.#send(this.#leastBusy(holders), request);
  }

  async #drop(request: Uint8Array): Promise<Uint8Array> {
    // Every instance, not only the holders the pool knows of: a deleted key must be zeroed wherever it is.
    const responses = await Promise.all(this.#members.map((m) => this.#send(m, request)));
    return responses.find((r) => decodeResponse(r).status === Status.OK) ?? responses[0];
  }

  async #generate(request: Uint8Array): Promise<Uint8Array> {
    const member = this.#leastBusy(this.#workers);
    const response = await this.#send(member, request);
    const { status, body } = decodeResponse(response);
    const record = status === Status.OK ? decodeKeyRecord(body) : undefined;
    if (record !== undefined) {
      member.keys.add(record.id);
      this.#mirror(request, record.id, record.sealed);
    }
    return response;
  }

  /**
   * Opens a key a worker has just opened, made or imported in the guest in this isolate too, from
   * its sealed blob (public: only a guest with the master key opens it), so that guest can serve
   * it. A key without a blob (no master key) stays in the worker alone.
   */
  #mirror(request: Uint8Array, id: string, sealed: Uint8Array | undefined): void {
    const inline = this.#inline;
    if (inline === undefined) return;
    const unseal = request[0] === Op.UNSEAL
      ? request
      : sealed === undefined || request[0] === Op.GENERATE && request[1] === WRAPPING_KEY_SPEC
      ? undefined
      : encodeRequest(Op.UNSEAL, keyIdBytes(id)!, sealed);
    if (unseal === undefined) return;
    void this.#send(inline, unseal).then((response) => {
      if (decodeResponse(response).status === Status.OK) inline.keys.add(id);
    });
  }

  async #list(request: Uint8Array): Promise<Uint8Array> {
    return mergeKeyLists(await Promise.all(this.#members.map((m) => this.#send(m, request))));
  }

  /** Sends to every instance; answers the first failure, or the first answer when all succeed. */
  async #everyone(request: Uint8Array): Promise<Uint8Array> {
    const responses = await Promise.all(this.#members.map((m) => this.#send(m, request)));
    return responses.find((r) => decodeResponse(r).status !== Status.OK) ?? responses[0];
  }

  async #send(member: Member, request: Uint8Array): Promise<Uint8Array> {
    member.outstanding++;
    let response: Uint8Array;
    try {
      response = await member.transport.request(request);
    } finally {
      member.outstanding--;
    }
    const { status, body } = decodeResponse(response);
    if (request[0] === Op.LIST && status === Status.OK) this.#learn(member, body);
    // An instance that no longer has a key (dropped, or evicted from its cache) is no longer a holder.
    if (KEYED_OPS.has(request[0]) && (status === Status.KEY_NOT_FOUND || (request[0] === Op.DROP && status === Status.OK))) {
      member.keys.delete(toHex(request.subarray(1, 1 + KEY_ID_BYTES)));
    }
    const restarts = member.transport.restarts ?? 0;
    // A re-created instance holds the key directory again but none of the keys it had generated.
    if (status === Status.GUEST_TRAPPED || status === Status.UNAVAILABLE || restarts !== member.restartsSeen) {
      member.restartsSeen = restarts;
      void this.#refresh(member);
    }
    return response;
  }

  /** Asks an instance which keys it holds; one question at a time per instance. */
  #refresh(member: Member): Promise<void> {
    member.refreshing ??= (async () => {
      try {
        // Sent through #send so the answer is learnt in the order the instance gave it.
        await this.#send(member, new Uint8Array([Op.LIST]));
      } finally {
        member.refreshing = undefined;
      }
    })();
    return member.refreshing;
  }

  #learn(member: Member, listBody: Uint8Array): void {
    const list = decodeKeyList(listBody);
    if (list !== undefined) member.keys = new Set(list.map((k) => k.id));
  }

  /** The candidate with the fewest requests in flight; ties go round the pool in turn. */
  #leastBusy(candidates: Member[]): Member {
    const start = this.#nextStart++ % candidates.length;
    let best = candidates[start];
    for (let i = 1; i < candidates.length; i++) {
      const m = candidates[(start + i) % candidates.length];
      if (m.outstanding < best.outstanding) best = m;
    }
    return best;
  }
}
