/**
 * The signer compartment: the only code that instantiates the guest and holds its instance.
 *
 * It speaks the message-level protocol of `protocol.ts` (request bytes in, response bytes out), so
 * the inline and worker transports (and the key server's, in the `process` mode) carry the same bytes. It takes its module
 * compiled or as bytes and its secrets from sources ({@linkcode MasterKeySource},
 * {@linkcode KeySource}) rather than paths, so it runs where there are no files: each secret is read
 * synchronously into one buffer of the compartment's, which is zeroed as soon as the guest has
 * pulled the bytes in one at a time through `in_read1`. `files.ts` gives the sources for files.
 *
 * It is one file of a little over 400 lines on purpose: the instance, the imports it is given and
 * the trap recovery share private state, and keeping them in one module keeps the instance from
 * being reachable anywhere else.
 *
 * @module
 */

import { decodeKeyRecord, encodeResponse, type KeyFileReport, Op, Status, toHex } from "../core/protocol.ts";
import { SELF_TEST_DIGEST, SELF_TEST_KEYS } from "./self_test.ts";

/** The 16-byte tag the guest keeps in its data segment (ABI.md). */
export const GUEST_TAG = new TextEncoder().encode("keycell.guest.v1");

/** The request of exports that take none, and the input between calls. */
const NO_INPUT = new Uint8Array(0);

/** Largest response the guest may write. */
const MAX_OUTPUT_BYTES = 64 * 1024;
/** Largest key file the compartment reads. */
export const MAX_KEY_FILE_BYTES = 64 * 1024;

/**
 * A master key: 32 bytes read straight into the guest.
 *
 * @example
 * ```ts
 * import type { MasterKeySource } from "./compartment.ts";
 *
 * // A key held by the platform (here a buffer, for a test), copied into the compartment's buffer.
 * const held = new Uint8Array(32);
 * const source: MasterKeySource = { name: "test key", size: () => held.length, read: (into) => into.set(held) };
 * ```
 */
export interface MasterKeySource {
  /** Names the key in messages (a path, a binding); not secret. */
  readonly name: string;
  /** The key's length in bytes, or `undefined` when there is none yet. Throws when it cannot be read. */
  size(): number | undefined;
  /** Fills `into` (exactly {@linkcode MasterKeySource.size} bytes), which the compartment zeroes once the guest holds the key. */
  read(into: Uint8Array): void;
  /**
   * Keeps a key the guest has just made (first start only). `key` is the compartment's buffer,
   * zeroed when this returns: copy it nowhere but its destination.
   */
  create?(key: Uint8Array): void;
}

/**
 * Private keys (PEM or DER, PKCS#8, PKCS#1 RSA or SEC1 EC) loaded into the guest at start and
 * again whenever it is re-created.
 *
 * @example
 * ```ts
 * import type { KeySource } from "./compartment.ts";
 *
 * const none: KeySource = { name: "no keys", list: () => [], size: () => 0, read: () => {} };
 * ```
 */
export interface KeySource {
  /** Names the source in reports (a directory); not secret. */
  readonly name: string;
  /** The entries' names, in load order. Throws (with a message for the report) when it cannot list them. */
  list(): string[];
  /** An entry's length in bytes. Throws (with a message for the report) when it cannot be loaded. */
  size(entry: string): number;
  /** Fills `into` (exactly {@linkcode KeySource.size} bytes), which the compartment zeroes once the guest has the key. */
  read(entry: string, into: Uint8Array): void;
}

/** Where the compartment gets its module and keys. */
export interface CompartmentOptions {
  /** The guest module (wasm/signer.wasm), compiled or as bytes (runtimes that refuse to compile at run time need it compiled). */
  wasm: BufferSource | WebAssembly.Module;
  /** Keys loaded at start and again whenever the guest is re-created. */
  keys?: KeySource;
  /** The master key, read into the guest at start and whenever it is re-created. Without one the guest seals nothing. */
  masterKey?: MasterKeySource;
  /** Have the guest make the master key when the source has none (first start only). */
  createMasterKey?: boolean;
  /**
   * The master key being rotated away from, read into the guest like the master key. Blobs the
   * master key does not open are opened under it; it never seals. Needs `masterKey`.
   */
  previousMasterKey?: MasterKeySource;
  /** Budget of the guest's cache of unsealed keys, in bytes. Default 64 MiB. */
  cacheBytes?: number;
}

/** Default budget of the guest's cache of unsealed keys. */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/** Length of the master key file. */
export const MASTER_KEY_BYTES = 32;

interface GuestExports {
  kc_load(): number;
  kc_generate(): number;
  kc_public_key(): number;
  kc_sign(): number;
  kc_drop(): number;
  kc_list(): number;
  kc_tag(): number;
  kc_trap(): number;
  kc_master_new(): number;
  kc_master_load(): number;
  kc_master_previous(): number;
  kc_unseal(): number;
  kc_reseal(): number;
  kc_import(): number;
  kc_stats(): number;
  kc_verify(): number;
}

const EXPORT_BY_OP = new Map<number, keyof GuestExports>([
  [Op.GENERATE, "kc_generate"],
  [Op.PUBLIC_KEY, "kc_public_key"],
  [Op.SIGN, "kc_sign"],
  [Op.DROP, "kc_drop"],
  [Op.LIST, "kc_list"],
  [Op.HEALTH, "kc_tag"],
  [Op.TRAP, "kc_trap"],
  [Op.UNSEAL, "kc_unseal"],
  [Op.RESEAL, "kc_reseal"],
  [Op.IMPORT, "kc_import"],
  [Op.STATS, "kc_stats"],
  [Op.VERIFY, "kc_verify"],
]);

const BAD_KEY_FILE: Record<number, string> = {
  [-3]: "not a supported private key (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA 2048/3072/4096, P-256, P-384)",
  [-7]: "the signer has no room for another key",
};

/**
 * Holds one guest instance and re-creates it when it traps.
 *
 * @example
 * ```ts
 * import { Compartment } from "./compartment.ts";
 * import { encodeRequest, Op } from "../core/protocol.ts";
 *
 * const compartment = Compartment.create({ wasm: Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url)) });
 * const response = compartment.handle(encodeRequest(Op.LIST)); // status 0, no keys
 * ```
 */
export class Compartment {
  readonly #module: WebAssembly.Module;
  readonly #keys?: KeySource;
  readonly #options: CompartmentOptions;
  #masterKeyId?: Uint8Array;
  #previousMasterKeyId?: Uint8Array;
  #exports!: GuestExports;
  #input: Uint8Array = NO_INPUT;
  readonly #output = new Uint8Array(MAX_OUTPUT_BYTES);
  readonly #outputView = new DataView(this.#output.buffer);
  readonly #entropy = new Uint8Array(512);
  #entropyUsed = this.#entropy.length;
  #report: KeyFileReport[] = [];
  #recreations = 0;
  /** Set when a re-created instance failed its self-test: every request answers UNAVAILABLE. */
  #broken = false;

  private constructor(module: WebAssembly.Module, options: CompartmentOptions) {
    this.#module = module;
    this.#keys = options.keys;
    this.#options = options;
    this.#instantiate();
  }

  /**
   * Instantiates the guest and loads the key directory, if any.
   * Throws if the module does not instantiate, does not carry the guest tag or fails its
   * known-answer self-test (`self_test.ts`), which runs at every instantiation.
   */
  static create(options: CompartmentOptions): Compartment {
    const module = options.wasm instanceof WebAssembly.Module
      ? options.wasm
      : new WebAssembly.Module(options.wasm);
    return new Compartment(module, options);
  }

  /** What the last load of the key directory did, one entry per file. */
  get keyFiles(): readonly KeyFileReport[] {
    return this.#report;
  }

  /** How many times the guest has been re-created after a trap. */
  get recreations(): number {
    return this.#recreations;
  }

  /**
   * Answers one protocol request. A trap inside the guest answers `GUEST_TRAPPED` and leaves a
   * fresh instance with the key directory reloaded. Throws only when that fresh instance cannot
   * be made or fails its self-test; every later request then answers `UNAVAILABLE`. The answer is a
   * new array over a buffer of its own, which the caller may keep or transfer.
   */
  handle(request: Uint8Array): Uint8Array {
    if (this.#broken) return encodeResponse(Status.UNAVAILABLE);
    if (request[0] === Op.MASTER_KEY_ID) {
      return this.#masterKeyId ? encodeResponse(Status.OK, this.#masterKeyId) : encodeResponse(Status.NO_MASTER_KEY);
    }
    const name = EXPORT_BY_OP.get(request[0]);
    if (name === undefined) return encodeResponse(Status.BAD_OP);
    const result = this.#call(name, request.subarray(1));
    if (result === "trapped") return encodeResponse(Status.GUEST_TRAPPED);
    if (result < 0) return encodeResponse((-result) as Status);
    if (name === "kc_tag" && !sameBytes(this.#output.subarray(0, result), GUEST_TAG)) {
      return encodeResponse(Status.UNAVAILABLE);
    }
    return encodeResponse(Status.OK, this.#output.subarray(0, result));
  }

  #call(name: keyof GuestExports, input: Uint8Array): number | "trapped" {
    const result = this.#invoke(name, input);
    if (result === "trapped") {
      this.#recreations++;
      try {
        this.#instantiate();
      } catch (err) {
        // The new instance failed its self-test (or could not be made, e.g. a key source that
        // hands its key over once): it must not sign, so this compartment answers UNAVAILABLE
        // from now on, and the caller hears why.
        this.#broken = true;
        throw err;
      }
    }
    return result;
  }

  /** Calls one export; anything thrown out of the guest is reported as a trap. */
  #invoke(name: keyof GuestExports, input: Uint8Array): number | "trapped" {
    this.#input = input;
    try {
      return this.#exports[name]();
    } catch {
      // A trap, or an import refusing an out-of-bounds write: the guest's state is unknown,
      // so the caller replaces the instance rather than reuse it.
      return "trapped";
    } finally {
      this.#input = NO_INPUT;
    }
  }

  /**
   * Makes a fresh instance and loads the key directory into it. A key file that traps the guest is
   * skipped on the next attempt, so one bad file can neither loop nor keep the other keys out.
   */
  #instantiate(): void {
    const poisoned = new Set<string>();
    for (;;) {
      const instance = new WebAssembly.Instance(this.#module, { keycell: this.#imports() });
      this.#exports = instance.exports as unknown as GuestExports;
      const tag = this.#invoke("kc_tag", NO_INPUT);
      if (tag !== GUEST_TAG.length || !sameBytes(this.#output.subarray(0, tag), GUEST_TAG)) {
        throw new Error("wasm/signer.wasm is not a keycell guest (tag mismatch)");
      }
      this.#selfTest();
      this.#setMasterKey();
      if (this.#keys === undefined) return;
      const report = this.#loadKeys(this.#keys, poisoned);
      if (report !== "trapped") {
        this.#report = report;
        return;
      }
    }
  }

  /**
   * Known answers before any real key goes in: each test key of `self_test.ts` is loaded (its id
   * checks the public key the guest computed), signs a fixed digest (RSA: the expected bytes; the
   * wide guest verifies its ECDSA signatures itself) and is dropped again, which frees and zeroes
   * it in the guest. A wrong answer throws, so the instance never signs.
   */
  #selfTest(): void {
    const loaded: Uint8Array[] = [];
    try {
      for (const key of SELF_TEST_KEYS) {
        const fail = (what: string) => new Error(`the guest failed its self-test: ${key.name}: ${what}`);
        const record = this.#invoke("kc_load", key.der);
        if (record === "trapped" || record < 33) throw fail(`load answered ${record}`);
        const id = this.#output.slice(1, 33);
        loaded.push(id);
        if (!sameBytes(id, key.id)) throw fail("wrong public key");
        const request = new Uint8Array(34 + SELF_TEST_DIGEST.length);
        request.set(id);
        request[32] = key.alg;
        request.set(SELF_TEST_DIGEST, 34);
        const signed = this.#invoke("kc_sign", request);
        if (signed === "trapped" || signed <= 0) throw fail(`sign answered ${signed}`);
        if (key.signature !== undefined && !sameBytes(this.#output.subarray(0, signed), key.signature)) throw fail("wrong signature");
      }
    } finally {
      for (const id of loaded) this.#invoke("kc_drop", id);
      this.#output.fill(0);
    }
  }

  /**
   * Gives the fresh guest its master key: read from its source straight into the guest, or on
   * first start made by the guest and handed to the source through `out_write1`, whose bytes are
   * small integers rather than heap objects. Every buffer that held it is zeroed.
   */
  #setMasterKey(): void {
    const source = this.#options.masterKey;
    if (source === undefined) return;
    const budget = cacheBudget(this.#options.cacheBytes ?? DEFAULT_CACHE_BYTES);
    const size = source.size();
    this.#masterKeyId = size === undefined ? this.#makeMasterKey(source, budget) : this.#loadMasterKey("kc_master_load", source, size, budget);
    const previous = this.#options.previousMasterKey;
    if (previous !== undefined) {
      this.#previousMasterKeyId = this.#loadMasterKey("kc_master_previous", previous, previous.size(), new Uint8Array(0));
    }
  }

  /** Has the guest make the master key and hands it to its source; answers its id. */
  #makeMasterKey(source: MasterKeySource, budget: Uint8Array): Uint8Array {
    if (!this.#options.createMasterKey || source.create === undefined) throw new Error(`the master key ${source.name} is missing`);
    const result = this.#invoke("kc_master_new", budget);
    if (result !== 2 * MASTER_KEY_BYTES) throw new Error(`the guest could not make a master key (${result})`);
    try {
      source.create(this.#output.subarray(0, MASTER_KEY_BYTES));
    } finally {
      this.#output.fill(0, 0, MASTER_KEY_BYTES);
    }
    return this.#output.slice(MASTER_KEY_BYTES, 2 * MASTER_KEY_BYTES);
  }

  /**
   * Reads a master key of `size` bytes into a request after `prefix`, hands it to the guest and
   * zeroes the request; answers the key's id.
   */
  #loadMasterKey(
    name: "kc_master_load" | "kc_master_previous",
    source: MasterKeySource,
    size: number | undefined,
    prefix: Uint8Array,
  ): Uint8Array {
    if (size === undefined) throw new Error(`the master key ${source.name} is missing`);
    if (size !== MASTER_KEY_BYTES) throw new Error(`the master key ${source.name} is ${size} bytes, not ${MASTER_KEY_BYTES}`);
    const request = new Uint8Array(prefix.length + MASTER_KEY_BYTES);
    request.set(prefix);
    let result: number | "trapped";
    try {
      source.read(request.subarray(prefix.length));
      result = this.#invoke(name, request);
    } finally {
      request.fill(0);
    }
    if (result !== MASTER_KEY_BYTES) throw new Error(`the guest refused the master key ${source.name} (${result})`);
    return this.#output.slice(0, MASTER_KEY_BYTES);
  }

  /** Hex id of the previous master key the guest holds, if any. */
  get previousMasterKeyId(): string | undefined {
    return this.#previousMasterKeyId && toHex(this.#previousMasterKeyId);
  }

  /** Hex id of the master key the guest holds (HMAC of a fixed label under it), if any. */
  get masterKeyId(): string | undefined {
    return this.#masterKeyId && toHex(this.#masterKeyId);
  }

  #imports(): WebAssembly.ModuleImports {
    return {
      in_len: () => this.#input.length,
      in_read8: (off: number): bigint => {
        const input = this.#input;
        if (off >= 0 && off + 8 <= input.length) {
          return new DataView(input.buffer, input.byteOffset + off, 8).getBigUint64(0, true);
        }
        let v = 0n;
        for (let i = 7; i >= 0; i--) {
          const at = off + i;
          v = (v << 8n) | BigInt(at >= 0 && at < input.length ? input[at] : 0);
        }
        return v;
      },
      in_read1: (off: number): number => (off >= 0 && off < this.#input.length ? this.#input[off] : -1),
      out_write1: (off: number, byte: number): void => {
        if (off < 0 || off >= MAX_OUTPUT_BYTES) throw new RangeError("guest response too large");
        this.#output[off] = byte;
      },
      out_write8: (off: number, v: bigint): void => {
        if (off < 0 || off + 8 > MAX_OUTPUT_BYTES) throw new RangeError("guest response too large");
        this.#outputView.setBigUint64(off, BigInt.asUintN(64, v), true);
      },
      rand8: (): bigint => {
        if (this.#entropyUsed + 8 > this.#entropy.length) {
          crypto.getRandomValues(this.#entropy);
          this.#entropyUsed = 0;
        }
        const at = this.#entropyUsed;
        const v = new DataView(this.#entropy.buffer, at, 8).getBigUint64(0, true);
        this.#entropy.fill(0, at, at + 8);
        this.#entropyUsed += 8;
        return v;
      },
    };
  }

  #loadKeys(source: KeySource, poisoned: Set<string>): KeyFileReport[] | "trapped" {
    let names: string[];
    try {
      names = source.list();
    } catch (err) {
      return [{ file: source.name, error: (err as Error).message }];
    }
    const report: KeyFileReport[] = [];
    for (const file of names) {
      if (poisoned.has(file)) {
        report.push({ file, error: "the signer failed while loading it" });
        continue;
      }
      const entry = this.#loadKey(source, file);
      if (entry === "trapped") {
        poisoned.add(file);
        return "trapped";
      }
      report.push(entry);
    }
    return report;
  }

  #loadKey(source: KeySource, file: string): KeyFileReport | "trapped" {
    let size: number;
    try {
      size = source.size(file);
    } catch (err) {
      return { file, error: (err as Error).message };
    }
    if (size === 0 || size > MAX_KEY_FILE_BYTES) {
      return { file, error: `size ${size} is outside 1..${MAX_KEY_FILE_BYTES} bytes` };
    }
    const buffer = new Uint8Array(size);
    try {
      source.read(file, buffer);
      const result = this.#invoke("kc_load", buffer);
      if (result === "trapped") return result;
      if (result < 0) return { file, error: BAD_KEY_FILE[result] ?? `rejected (${result})` };
      const record = decodeKeyRecord(this.#output.subarray(0, result));
      if (record === undefined) return { file, error: "bad record" };
      return { file, id: record.id, keySpec: record.keySpec, ...(record.sealed ? { sealed: record.sealed } : {}) };
    } catch (err) {
      return { file, error: (err as Error).message };
    } finally {
      buffer.fill(0);
    }
  }
}

function cacheBudget(bytes: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(bytes), true);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
