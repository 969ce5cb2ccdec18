/**
 * Keys that live in the guest and persist as sealed blobs in a {@linkcode KeyStore}.
 *
 * {@linkcode SealedSigner} sits above any transport's {@linkcode ProtocolSignerClient}: the guest
 * generates, imports and seals keys, the store keeps the blobs, and a signature for a key the
 * guest does not hold (never loaded here, or evicted from its cache) fetches the blob, has the
 * guest open it, and retries once. The host holds the store and the worker keeps its narrow
 * permissions; blobs are not secret. A store that fails or is slow is `signer_unavailable` (503),
 * never "not found".
 *
 * Its four hundred lines are one job, the life of a sealed key (make, import, find, reseal on a
 * miss, publish in the JWKS, forget), with the wrapping key and the master-key fence it needs.
 *
 * @module
 */

import {
  decodeKeyRecord,
  decodeResponse,
  encodeRequest,
  KEY_SPEC_CODES,
  keyIdBytes,
  type KeyRecord,
  type KeySpec,
  Op,
  Status,
  statusError,
  toHex,
  WRAPPING_KEY_SPEC,
} from "./protocol.ts";
import { KeycellError } from "./errors.ts";
import type { KeylessNames } from "./key_names.ts";
import { jwksKeyIds, markJwks } from "./jwks_set.ts";
import { admitsSealedUnder, type KeyPage, type KeyStore, type ListOptions, META, SealedUnderOtherKey, type StoredKey } from "./key_store.ts";
import type { KeyFileReport } from "./protocol.ts";
import { type KeyService, listAllKeys } from "./key_service.ts";
import { type KeyInfo, type ProtocolSignerClient, type SignerClient, type SignRequest, type Transport } from "./signer_client.ts";
import { getLog } from "./log.ts";

const log = getLog();

/** The public half of the guest's wrapping key, with what the guest needs to use it. */
export interface WrappingKey {
  id: string;
  /** SubjectPublicKeyInfo DER (RSA-4096). */
  spki: Uint8Array;
  sealed: Uint8Array;
}

/** Length of the RSA-OAEP part of a wrapped key (RSA-4096). */
export const WRAPPED_KEY_OAEP_BYTES = 512;

/**
 * Sends one request whose failures are errors ({@linkcode statusError}) and returns the
 * body of its `OK` answer.
 *
 * @example
 * ```ts
 * import { Op, toHex } from "./protocol.ts";
 * import { sealingCall } from "./sealed_keys.ts";
 * import type { Transport } from "./signer_client.ts";
 *
 * async function masterKeyId(transport: Transport): Promise<string> {
 *   return toHex(await sealingCall(transport, Op.MASTER_KEY_ID)); // rejects with a KeycellError
 * }
 * ```
 */
export async function sealingCall(transport: Transport, op: Op, ...parts: Uint8Array[]): Promise<Uint8Array> {
  const { status, body } = decodeResponse(await transport.request(encodeRequest(op, ...parts)));
  if (status === Status.OK) return body;
  throw statusError(status);
}

/**
 * What the HTTP API needs beyond a {@linkcode SignerClient}: paged listing, wrapped import, and
 * the JWKS set (the keys `/.well-known/jwks.json` publishes).
 */
export interface SealedKeys {
  listPage(options: ListOptions): Promise<KeyPage>;
  wrappingKey(): Promise<{ id: string; spki: Uint8Array }>;
  importWrapped(keySpec: KeySpec, wrapped: Uint8Array): Promise<KeyInfo>;
  /** The ids in the JWKS set, sorted; an id may outlive its key (the caller skips those). */
  jwksKeyIds(): Promise<string[]>;
  /**
   * Puts a stored key into the JWKS set (`on`) or takes it out. Rejects with `key_not_found` for
   * a key the store does not hold (taking its id out of the set all the same).
   */
  setJwks(id: string, on: boolean): Promise<void>;
}

/** How a {@linkcode SealedSigner} treats its store. */
export interface SealedSignerOptions {
  /** A store call that takes longer fails as `signer_unavailable`. Default 5 s. */
  storeTimeoutMs?: number;
  /**
   * How long a key the guests hold signs before the store is asked again whether it still
   * holds it, so a key deleted by another node sharing the store (or while this one was
   * opening it) stops signing here within this time. Default 5 s. With 0, every signature waits
   * for the store's answer first, so a key deleted anywhere never signs again.
   */
  recheckMs?: number;
}

/** Past this many remembered confirmations, all are forgotten (each key is then checked again). */
const MAX_CONFIRMED = 100_000;

/**
 * A {@linkcode SignerClient} whose keys persist sealed in a {@linkcode KeyStore}.
 *
 * @example
 * ```ts
 * import type { KeyStore } from "./key_store.ts";
 * import { SealedSigner } from "./sealed_keys.ts";
 * import { ProtocolSignerClient, type Transport } from "./signer_client.ts";
 *
 * async function signHello(transport: Transport, store: KeyStore): Promise<Uint8Array> {
 *   const signer = new SealedSigner(new ProtocolSignerClient(transport), store);
 *   const key = await signer.generate("ECC_NIST_P256"); // its sealed blob is now in the store
 *   const message = new TextEncoder().encode("hello");
 *   return await signer.sign({ keyId: key.id, algorithm: "ECDSA_SHA_256", messageType: "RAW", message });
 * }
 * ```
 */
export class SealedSigner implements SignerClient, SealedKeys, KeyService {
  readonly #inner: ProtocolSignerClient;
  readonly #store: KeyStore;
  readonly #storeTimeoutMs: number;
  readonly #recheckMs: number;
  /** When the store last showed each key (performance.now()). */
  readonly #confirmed = new Map<string, number>();
  /** Store checks under way, so concurrent signatures for one key share one. */
  readonly #confirming = new Map<string, Promise<void>>();
  #wrapping?: Promise<WrappingKey>;
  #sealingKeyId?: Uint8Array;

  constructor(inner: ProtocolSignerClient, store: KeyStore, options: SealedSignerOptions = {}) {
    this.#inner = inner;
    this.#store = store;
    this.#storeTimeoutMs = options.storeTimeoutMs ?? 5_000;
    this.#recheckMs = options.recheckMs ?? 5_000;
  }

  get mode(): string {
    return this.#inner.mode;
  }

  /** Every stored key; for small key sets. {@linkcode listPage} pages through large ones. */
  async listKeys(): Promise<KeyInfo[]> {
    return await listAllKeys(this);
  }

  /** One page of stored keys in id order. */
  listPage(options: ListOptions): Promise<KeyPage> {
    return this.#fromStore(() => this.#store.list(options));
  }

  /** The id of the stored key with this SKI, or else this RSA certificate digest. */
  findKey(by: Partial<KeylessNames>): Promise<string | undefined> {
    return this.#fromStore(() => this.#store.findByKeylessName(by));
  }

  async getKey(id: string): Promise<KeyInfo> {
    const stored = await this.#fromStore(() => this.#store.get(id));
    if (stored === undefined) throw new KeycellError("key_not_found", "no key with that id");
    return { id: stored.id, keySpec: stored.keySpec, publicKey: stored.publicKey };
  }

  async sign(request: SignRequest): Promise<Uint8Array> {
    await this.confirm(request.keyId);
    try {
      return await this.#inner.sign(request);
    } catch (err) {
      if (!(err instanceof KeycellError && err.code === "key_not_found")) throw err;
    }
    await this.#unseal(request.keyId);
    return await this.#inner.sign(request);
  }

  /**
   * Makes a key that another node (or a racing delete) removed from the store stop signing
   * here. When the store showed the key within `recheckMs` this resolves at once; when it showed
   * it longer ago, it resolves at once too and asks the store in the background; for a key it
   * never showed here, or when `recheckMs` is 0, it waits for the answer. A key the store no longer holds is dropped from
   * every guest, and a caller that waited gets `key_not_found`. A store that cannot answer does
   * not stop a key from signing (nor wait for the store's timeout): deletion then takes effect
   * once the store answers again.
   */
  confirm(id: string): Promise<void> {
    const confirmedAt = this.#confirmed.get(id);
    if (confirmedAt !== undefined && performance.now() - confirmedAt < this.#recheckMs) return Promise.resolve();
    const check = this.#check(id);
    if (confirmedAt === undefined || this.#recheckMs === 0) return check;
    check.catch(() => {});
    return Promise.resolve();
  }

  #check(id: string): Promise<void> {
    let check = this.#confirming.get(id);
    if (check === undefined) {
      check = (async () => {
        let stored: StoredKey | undefined;
        try {
          stored = await this.#fromStore(() => this.#store.get(id));
        } catch {
          return;
        }
        if (stored !== undefined) return this.#remember(id);
        this.#confirmed.delete(id);
        await this.#inner.deleteKey(id).catch(() => {});
        throw new KeycellError("key_not_found", "no key with that id");
      })().finally(() => this.#confirming.delete(id));
      this.#confirming.set(id, check);
    }
    return check;
  }

  #remember(id: string): void {
    if (this.#confirmed.size >= MAX_CONFIRMED) this.#confirmed.clear();
    this.#confirmed.set(id, performance.now());
  }

  async generate(keySpec: KeySpec): Promise<KeyInfo> {
    const record = await this.#sealedRecord(Op.GENERATE, new Uint8Array([KEY_SPEC_CODES[keySpec]]));
    return await this.#keep(record);
  }

  /**
   * Imports a key wrapped to the guest's wrapping key ({@linkcode wrappingKey}): the 512-byte
   * RSA-OAEP-SHA-256 ciphertext of an AES-256 key, then the RFC 5649 wrap of the PKCS#8 DER.
   */
  async importWrapped(keySpec: KeySpec, wrapped: Uint8Array): Promise<KeyInfo> {
    const wrapping = await this.wrappingKey();
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, wrapping.sealed.length, true);
    const record = await this.#sealedRecord(
      Op.IMPORT,
      new Uint8Array([KEY_SPEC_CODES[keySpec]]),
      keyIdBytes(wrapping.id)!,
      length,
      wrapping.sealed,
      wrapped,
    );
    return await this.#keep(record);
  }

  /**
   * The guest's RSA-4096 wrapping key, made and sealed by the guest on first use and kept in the
   * store, so every node and instance sharing the store unwraps with the same key.
   */
  wrappingKey(): Promise<WrappingKey> {
    this.#wrapping ??= this.#loadWrappingKey().catch((err) => {
      this.#wrapping = undefined;
      throw err;
    });
    return this.#wrapping;
  }

  /** Removes a key: the guest drops (and zeroes) it, then its blob leaves the store. */
  async deleteKey(id: string): Promise<void> {
    const stored = await this.#fromStore(() => this.#store.get(id));
    if (stored === undefined) throw new KeycellError("key_not_found", "no key with that id");
    try {
      await this.#inner.deleteKey(id);
    } catch (err) {
      // Not in the guest's cache (never opened here, or evicted): nothing to zero there.
      if (!(err instanceof KeycellError && err.code === "key_not_found")) throw err;
    }
    await this.#fromStore(() => this.#store.delete(id));
    this.#confirmed.delete(id);
    // The JWKS skips ids without a key, so a failure here leaves nothing published.
    await this.#fromStore(() => markJwks(this.#store, id, false)).catch(() => {});
  }

  /** The ids in the store's JWKS set. */
  jwksKeyIds(): Promise<string[]> {
    return this.#fromStore(() => jwksKeyIds(this.#store));
  }

  /** Puts a stored key into the store's JWKS set, or takes it out. */
  async setJwks(id: string, on: boolean): Promise<void> {
    const stored = await this.#fromStore(() => this.#store.get(id));
    if (stored !== undefined || !on) await this.#fromStore(() => markJwks(this.#store, id, on));
    if (stored === undefined) throw new KeycellError("key_not_found", "no key with that id");
  }

  /** Stores the sealed blobs of keys loaded from a key directory; keys already stored are kept. */
  async importKeyFiles(keyFiles: readonly KeyFileReport[]): Promise<number> {
    let added = 0;
    for (const f of keyFiles) {
      if (f.id === undefined || f.sealed === undefined || f.keySpec === undefined) continue;
      const info = await this.#inner.getKey(f.id);
      const put = { id: f.id, keySpec: f.keySpec as KeySpec, publicKey: info.publicKey, sealed: f.sealed };
      const sealedUnder = await this.#masterKeyIdBytes();
      if (await this.#fromStore(() => this.#store.put(put, sealedUnder))) added++;
    }
    return added;
  }

  async health(): Promise<void> {
    await this.#inner.health();
    // One indexed read: the store answers, whatever its size.
    await this.#fromStore(() => this.#store.getMeta(META.MASTER_KEY_ID));
  }

  injectTrap(): Promise<KeycellError> {
    return this.#inner.injectTrap();
  }

  async close(): Promise<void> {
    await this.#inner.close();
    await this.#store.close();
  }

  /** The hex id of the master key the guest holds. */
  async masterKeyId(): Promise<string> {
    return toHex(await this.#masterKeyIdBytes());
  }

  /**
   * The id of the master key the guest seals under, which the store checks every new blob
   * against (a rotation elsewhere fences this node off). The guest keeps one master key for its
   * life, re-created instances included, so it is asked once.
   */
  async #masterKeyIdBytes(): Promise<Uint8Array> {
    return this.#sealingKeyId ??= (await this.#call(Op.MASTER_KEY_ID)).slice();
  }

  /**
   * Makes sure the guest holds a stored key, opening its sealed blob there if it does not.
   * Rejects with `key_not_found` when the store has no such key.
   */
  load(id: string): Promise<void> {
    return this.#unseal(id);
  }

  async #unseal(id: string): Promise<void> {
    const stored = await this.#fromStore(() => this.#store.get(id));
    if (stored === undefined) throw new KeycellError("key_not_found", "no key with that id");
    try {
      await this.#call(Op.UNSEAL, keyIdBytes(id)!, stored.sealed);
    } catch (err) {
      // A blob resealed by a rotation this node's master key is not part of: the node, not the key, is out of date.
      if (err instanceof KeycellError && err.code === "key_unusable") {
        const recorded = await this.#fromStore(() => this.#store.getMeta(META.MASTER_KEY_ID));
        if (!admitsSealedUnder(recorded, await this.#masterKeyIdBytes())) throw new SealedUnderOtherKey();
      }
      throw err;
    }
    this.#remember(id);
  }

  async #sealedRecord(op: Op, ...parts: Uint8Array[]): Promise<KeyRecord> {
    const record = decodeKeyRecord(await this.#call(op, ...parts));
    if (record?.sealed === undefined) throw new KeycellError("internal", "the signer sent no sealed key");
    return record;
  }

  /** Stores a key the guest just made or imported; if the store fails, the guest forgets it too. */
  async #keep(record: KeyRecord): Promise<KeyInfo> {
    const key = { id: record.id, keySpec: record.keySpec, publicKey: record.spki, sealed: record.sealed! };
    try {
      const sealedUnder = await this.#masterKeyIdBytes();
      await this.#fromStore(() => this.#store.put(key, sealedUnder));
    } catch (err) {
      await this.#inner.deleteKey(record.id).catch(() => {});
      throw err;
    }
    this.#remember(key.id);
    return { id: key.id, keySpec: key.keySpec, publicKey: key.publicKey };
  }

  async #loadWrappingKey(): Promise<WrappingKey> {
    let stored = await this.#fromStore(() => this.#store.getMeta(META.WRAPPING_KEY));
    if (stored === undefined) {
      const made = await this.#sealedRecord(Op.GENERATE, new Uint8Array([WRAPPING_KEY_SPEC]));
      // Another node may have stored one meanwhile; everyone uses whichever was stored first.
      const value = encodeWrappingKey({ id: made.id, spki: made.spki, sealed: made.sealed! });
      const sealedUnder = await this.#masterKeyIdBytes();
      stored = await this.#fromStore(() => this.#store.setMetaOnce(META.WRAPPING_KEY, value, sealedUnder));
    }
    return decodeWrappingKey(stored);
  }

  #call(op: Op, ...parts: Uint8Array[]): Promise<Uint8Array> {
    return sealingCall(this.#inner.transport, op, ...parts);
  }

  /** Runs a store call within the time limit; any failure is `signer_unavailable`. */
  async #fromStore<T>(work: () => Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("timed out")), this.#storeTimeoutMs);
    });
    try {
      return await Promise.race([work(), timeout]);
    } catch (err) {
      if (err instanceof KeycellError) throw err;
      log.error(`key store (${this.#store.kind}) failed: ${(err as Error).message}`, { store: this.#store.kind });
      throw new KeycellError("signer_unavailable", "the key store is not available");
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * The store's form of the wrapping key (its {@linkcode META} entry):
 * `id (32) || spki length (u16 BE) || spki || sealed blob`.
 *
 * @example
 * ```ts
 * import { decodeWrappingKey, encodeWrappingKey } from "./sealed_keys.ts";
 *
 * const key = { id: "ab".repeat(32), spki: new Uint8Array([0x30, 0x00]), sealed: new Uint8Array([1, 2, 3]) };
 * const bytes = encodeWrappingKey(key); // 32 + 2 + 2 + 3 bytes
 * decodeWrappingKey(bytes); // the same id, spki and sealed blob
 * ```
 */
export function encodeWrappingKey(key: WrappingKey): Uint8Array {
  const out = new Uint8Array(32 + 2 + key.spki.length + key.sealed.length);
  out.set(keyIdBytes(key.id)!);
  new DataView(out.buffer).setUint16(32, key.spki.length);
  out.set(key.spki, 34);
  out.set(key.sealed, 34 + key.spki.length);
  return out;
}

/**
 * Reads the store's form of the wrapping key ({@linkcode encodeWrappingKey}).
 *
 * @example
 * ```ts
 * import { META, type KeyStore } from "./key_store.ts";
 * import { decodeWrappingKey, type WrappingKey } from "./sealed_keys.ts";
 *
 * async function storedWrappingKey(store: KeyStore): Promise<WrappingKey | undefined> {
 *   const bytes = await store.getMeta(META.WRAPPING_KEY);
 *   return bytes === undefined ? undefined : decodeWrappingKey(bytes);
 * }
 * ```
 */
export function decodeWrappingKey(bytes: Uint8Array): WrappingKey {
  const spkiLength = new DataView(bytes.buffer, bytes.byteOffset).getUint16(32);
  return {
    id: toHex(bytes.subarray(0, 32)),
    spki: bytes.slice(34, 34 + spkiLength),
    sealed: bytes.slice(34 + spkiLength),
  };
}
