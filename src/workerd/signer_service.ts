/**
 * The signer Worker's compartment, platform-neutral so Deno can test it: created lazily inside a
 * request (edge runtimes refuse randomness at module scope), from the platform-compiled guest
 * module (they refuse to compile at run time), with the master key read through a fetcher (a
 * read-only `disk` service on workerd).
 *
 * The master key crosses the signer's JS heap once per load: read with a BYOB reader into a buffer
 * too large for V8 to keep inside its heap ({@linkcode MASTER_KEY_BUFFER_BYTES}), copied into the
 * compartment's request buffer and zeroed. A guest that traps cannot be re-created from that buffer
 * (it is zeros by then), so the compartment is dropped and the next request reads the key again;
 * the id of every key loaded is checked against the expected one.
 *
 * @module
 */

import { encodeResponse, Status } from "../core/protocol.ts";
import { Compartment, MASTER_KEY_BYTES, type MasterKeySource } from "../guest/compartment.ts";
import { getLog } from "../core/log.ts";

const log = getLog("signer");

/** What the signer fetches its master key from: a `disk` service binding on workerd. */
export interface Fetcher {
  fetch(input: string): Promise<Response>;
}

/**
 * Size of the buffer the master key is read into. Typed arrays of 64 bytes or less live inside
 * V8's heap, where a moving collection can leave a copy that zeroing does not reach; larger ones
 * are allocated outside it.
 */
export const MASTER_KEY_BUFFER_BYTES = 128;

/** Where the signer finds its guest and master key. */
export interface SignerServiceOptions {
  /** The guest module, compiled by the platform (an imported `.wasm`). */
  module: WebAssembly.Module;
  /**
   * Where the master key comes from: a fetcher serving the key file at `url` (self-hosted), or a
   * platform secret holding it as 64 hex digits (Cloudflare, where a secret is a string).
   */
  masterKey: { secrets: Fetcher; url: string } | { secret: string; name: string };
  /**
   * Hex id of the master key the store's keys are sealed under. When absent, the first key loaded
   * sets it for this isolate's lifetime and every later load must match.
   */
  masterKeyId?: string;
  /** Budget of the guest's cache of unsealed keys, in bytes. */
  cacheBytes?: number;
}

/**
 * Answers protocol requests with a compartment it creates on first use and again after a trap.
 *
 * @example
 * ```ts
 * import { type Fetcher, SignerService } from "./signer_service.ts";
 * import { encodeRequest, Op } from "../core/protocol.ts";
 *
 * // `guest` is compiled by the platform from an imported .wasm; `env.SECRETS` is a read-only
 * // disk service holding master.key.
 * async function health(guest: WebAssembly.Module, env: { SECRETS: Fetcher }): Promise<Uint8Array> {
 *   const service = new SignerService({ module: guest, masterKey: { secrets: env.SECRETS, url: "http://secrets/master.key" } });
 *   return await service.request(encodeRequest(Op.HEALTH)); // the compartment starts on this first request
 * }
 * ```
 */
export class SignerService {
  readonly #options: SignerServiceOptions;
  #compartment?: Compartment;
  #expectedId?: string;
  #loads = 0;

  constructor(options: SignerServiceOptions) {
    this.#options = options;
    this.#expectedId = options.masterKeyId?.toLowerCase();
  }

  /** How many compartments were created (first start included). */
  get loads(): number {
    return this.#loads;
  }

  /** Answers one protocol request; never rejects: failures are response statuses. */
  async request(request: Uint8Array): Promise<Uint8Array> {
    let compartment = this.#compartment;
    if (compartment === undefined) {
      try {
        // Each request that finds no compartment loads its own rather than waiting on another
        // request's load: I/O and promises belong to the request that made them.
        const loaded = await this.#load();
        compartment = this.#compartment ??= loaded;
      } catch (err) {
        log.error(`cannot start the guest: ${(err as Error).message}`);
        return encodeResponse(Status.UNAVAILABLE);
      }
    }
    try {
      return compartment.handle(request);
    } catch (err) {
      // The guest trapped, and re-creating it asked the one-shot key source again: the next
      // request reads the key afresh for a new compartment.
      log.error(`the guest failed and will be re-created: ${(err as Error).message}`);
      if (this.#compartment === compartment) this.#compartment = undefined;
      return encodeResponse(Status.GUEST_TRAPPED);
    }
  }

  async #load(): Promise<Compartment> {
    const from = this.#options.masterKey;
    const source = "secrets" in from ? await readMasterKey(from.secrets, from.url) : masterKeyFromSecret(from.secret, from.name);
    let compartment: Compartment;
    try {
      compartment = Compartment.create({ wasm: this.#options.module, masterKey: source, cacheBytes: this.#options.cacheBytes });
    } finally {
      source.discard();
    }
    this.#loads++;
    const id = compartment.masterKeyId!;
    this.#expectedId ??= id;
    if (id !== this.#expectedId) {
      throw new Error(`the master key ${source.name} has id ${id}, not the expected ${this.#expectedId}`);
    }
    return compartment;
  }
}

/** A master key source that hands over its bytes once, then holds only zeros. */
export interface OneShotMasterKey extends MasterKeySource {
  /** Zeroes the buffer if the compartment has not taken the key. */
  discard(): void;
}

/**
 * Reads a 32-byte master key from a fetcher into a {@linkcode MASTER_KEY_BUFFER_BYTES} buffer with a
 * BYOB reader. The source it answers gives the key to one compartment and zeroes the buffer; asked
 * again, it throws rather than hand over zeros.
 *
 * @example
 * ```ts
 * import { type Fetcher, readMasterKey } from "./signer_service.ts";
 * import { Compartment } from "../guest/compartment.ts";
 *
 * async function start(guest: WebAssembly.Module, secrets: Fetcher): Promise<Compartment> {
 *   const source = await readMasterKey(secrets, "http://secrets/master.key");
 *   try {
 *     return Compartment.create({ wasm: guest, masterKey: source });
 *   } finally {
 *     source.discard(); // zeroes the key if the compartment did not take it
 *   }
 * }
 * ```
 */
export async function readMasterKey(secrets: Fetcher, url: string): Promise<OneShotMasterKey> {
  const response = await secrets.fetch(url);
  if (response.status === 404) {
    await response.body?.cancel();
    throw new Error(`the master key ${url} is missing`);
  }
  if (!response.ok || response.body === null) {
    await response.body?.cancel();
    throw new Error(`cannot read the master key ${url}: status ${response.status}`);
  }
  let buffer = new Uint8Array(MASTER_KEY_BUFFER_BYTES);
  let length = 0;
  const reader = response.body.getReader({ mode: "byob" });
  try {
    for (;;) {
      // A BYOB read transfers the buffer and gives it back filled: keep the returned view.
      const { value, done } = await reader.read(buffer.subarray(length));
      if (value !== undefined) {
        buffer = new Uint8Array(value.buffer, 0, MASTER_KEY_BUFFER_BYTES);
        length += value.length;
      }
      if (done) break;
      if (length === MASTER_KEY_BUFFER_BYTES) {
        buffer.fill(0);
        throw new Error(`the master key ${url} is over ${MASTER_KEY_BYTES} bytes`);
      }
    }
  } finally {
    reader.releaseLock();
  }
  if (length !== MASTER_KEY_BYTES) {
    buffer.fill(0);
    throw new Error(`the master key ${url} is ${length} bytes, not ${MASTER_KEY_BYTES}`);
  }
  return oneShot(url, buffer);
}

/**
 * A master key held by the platform as a secret string of 64 hex digits (on Cloudflare). The
 * string stays in the isolate's heap, where it cannot be zeroed; the bytes are decoded into a
 * {@linkcode MASTER_KEY_BUFFER_BYTES} buffer, handed over once and zeroed.
 *
 * @example
 * ```ts
 * import { masterKeyFromSecret } from "./signer_service.ts";
 *
 * const source = masterKeyFromSecret("ab".repeat(32), "secret MASTER_KEY");
 * source.size(); // 32
 * source.discard(); // zeroed: a guest asking for it now gets an error, never zeros
 * ```
 */
export function masterKeyFromSecret(secret: string, name: string): OneShotMasterKey {
  if (!/^[0-9a-fA-F]{64}$/.test(secret.trim())) throw new Error(`the master key ${name} must be ${2 * MASTER_KEY_BYTES} hex digits`);
  const buffer = new Uint8Array(MASTER_KEY_BUFFER_BYTES);
  buffer.subarray(0, MASTER_KEY_BYTES).setFromHex(secret.trim());
  return oneShot(name, buffer);
}

/** Hands the first {@linkcode MASTER_KEY_BYTES} of `buffer` to one guest, then zeroes it. */
function oneShot(name: string, buffer: Uint8Array): OneShotMasterKey {
  let held = true;
  const discard = () => {
    buffer.fill(0);
    held = false;
  };
  return {
    name,
    size() {
      if (!held) throw new Error(`the master key ${name} was handed to a guest already; it is read again for a new one`);
      return MASTER_KEY_BYTES;
    },
    read(into) {
      into.set(buffer.subarray(0, MASTER_KEY_BYTES));
      discard();
    },
    discard,
  };
}
