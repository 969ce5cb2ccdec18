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
 * Its 750 lines are one job, the life of a sealed key (make, import, find, reseal on a miss,
 * publish in the JWKS, forget), with the wrapping key and the master-key fence it needs.
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
import {
  admitsSealedUnder,
  type KeyNameRecord,
  type KeyPage,
  type KeyStore,
  type ListOptions,
  META,
  SealedUnderOtherKey,
  type StoredKey,
} from "./key_store.ts";
import { KEY_ID_PATTERN, type KeyFileReport } from "./protocol.ts";
import {
  checkKeyMetadata,
  type KeyChange,
  type KeyDetails,
  type KeyMetadata,
  type KeyService,
  listAllKeys,
  MAX_VERSIONS,
  PENDING_WINDOW_DAYS,
} from "./key_service.ts";
import {
  type KeyInfo,
  type ProtocolSignerClient,
  type SignerClient,
  type SignRequest,
  type Transport,
  type VerifyRequest,
} from "./signer_client.ts";
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
export interface SealedKeys extends Pick<KeyService, "describeKey" | "resolveKey" | "changeKey" | "generate" | "deleteKey"> {
  listPage(options: ListOptions): Promise<KeyPage>;
  wrappingKey(): Promise<{ id: string; spki: Uint8Array }>;
  importWrapped(keySpec: KeySpec, wrapped: Uint8Array, metadata?: KeyMetadata): Promise<KeyInfo>;
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
  /** A request whose store calls take longer, together, fails as `signer_unavailable`. Default 5 s. */
  storeTimeoutMs?: number;
  /**
   * How long a key the guests hold signs before the store is asked again whether it still
   * holds it, so a key deleted by another node sharing the store (or while this one was
   * opening it) stops signing here within this time. Default 5 s. With 0, every signature waits
   * for the store's answer first, so a key deleted anywhere never signs again.
   */
  recheckMs?: number;
  /** The clock for key creation times and deletion dates (ms since the epoch). Default `Date.now`. */
  now?: () => number;
}

/** A day, in ms. */
const DAY_MS = 86_400_000;
/** Attempts at a change whose record other writers keep changing first. */
const CHANGE_ATTEMPTS = 20;
/** Times a signature opens its key when the guests keep losing it between opening and signing. */
const UNSEAL_ATTEMPTS = 3;

/** A name's record, and whether the store holds it (a key stored without one is a name of its own). */
interface Named {
  record: KeyNameRecord;
  stored: boolean;
}

/**
 * The time one request may still wait for the store, summed over its store calls: the store's
 * deadline bounds a request, not each call it makes. Guest work between calls does not count.
 */
interface StoreBudget {
  leftMs: number;
}

/** The error signing with a key in `state` gets. */
function stateError(record: KeyNameRecord): KeycellError {
  return record.state === "disabled"
    ? new KeycellError("key_disabled", "the key is disabled; enable it to sign with it")
    : new KeycellError("key_pending_deletion", "the key is scheduled for deletion; cancel the deletion, then enable it, to sign with it");
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
  /** Keyless names (`ski:<hex>`, `digest:<hex>`) the store has answered, and the ids it answered. */
  readonly #keylessIds = new Map<string, string>();
  /** Store checks under way, so concurrent signatures for one key share one. */
  readonly #confirming = new Map<string, Promise<void>>();
  /** The primary of each enabled name signed by here, and when the store last showed it. */
  readonly #primaries = new Map<string, { id: string; at: number }>();
  readonly #now: () => number;
  #wrapping?: Promise<WrappingKey>;
  #sealingKeyId?: Uint8Array;
  #sweeper?: ReturnType<typeof setInterval>;

  constructor(inner: ProtocolSignerClient, store: KeyStore, options: SealedSignerOptions = {}) {
    this.#inner = inner;
    this.#store = store;
    this.#storeTimeoutMs = options.storeTimeoutMs ?? 5_000;
    this.#recheckMs = options.recheckMs ?? 5_000;
    this.#now = options.now ?? Date.now;
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

  /**
   * The id of the stored key with this SKI, or else this RSA certificate digest. A name is derived
   * from the key's public key, as its id is, so the store's answer never changes while the key is
   * stored: a name it answered stands for as long as its key's last store check does (see
   * {@linkcode confirm}), and a Keyless request skips the store as a signature by id does.
   */
  findKey(by: Partial<KeylessNames>): Promise<string | undefined> {
    const name = by.certificateDigest === undefined ? by.ski && `ski:${toHex(by.ski)}` : by.ski === undefined ? `digest:${toHex(by.certificateDigest)}` : undefined;
    const known = name && this.#keylessIds.get(name);
    if (known && this.#fresh(known)) return Promise.resolve(known);
    return this.#fromStore(() => this.#store.findByKeylessName(by)).then((id) => {
      if (name !== undefined && id !== undefined) {
        if (this.#keylessIds.size >= MAX_CONFIRMED) this.#keylessIds.clear();
        this.#keylessIds.set(name, id);
      }
      return id;
    });
  }

  async getKey(id: string): Promise<KeyInfo> {
    const stored = await this.#fromStore(() => this.#store.get(id));
    if (stored === undefined) throw new KeycellError("key_not_found", "no key with that id");
    return infoOf(stored);
  }

  async describeKey(ref: string): Promise<KeyDetails> {
    const budget = this.#budget();
    const { record } = await this.#named(ref, budget);
    return await this.#details(record, KEY_ID_PATTERN.test(ref) ? ref : record.primary, budget);
  }

  async resolveKey(ref: string, use: "sign" | "read"): Promise<string> {
    // An id stands for itself; signing checks its state.
    if (KEY_ID_PATTERN.test(ref)) return ref;
    const known = this.#primaries.get(ref);
    if (use === "sign" && known !== undefined && performance.now() - known.at < this.#recheckMs) return known.id;
    const { record } = await this.#named(ref, this.#budget());
    if (use === "read") return record.primary;
    if (record.state !== "enabled") {
      this.#primaries.delete(ref);
      throw stateError(record);
    }
    this.#primaries.set(ref, { id: record.primary, at: performance.now() });
    return record.primary;
  }

  async changeKey(ref: string, change: KeyChange): Promise<KeyDetails> {
    const budget = this.#budget();
    for (let attempt = 0; attempt < CHANGE_ATTEMPTS; attempt++) {
      const { record, stored } = await this.#named(ref, budget);
      const from = stored ? record : undefined;
      let to: KeyNameRecord;
      let version: StoredKey | undefined;
      switch (change.action) {
        case "rotate": {
          if (record.state === "pending_deletion") throw stateError(record);
          if (record.versions.length >= MAX_VERSIONS) {
            throw new KeycellError("bad_request", `a key keeps at most ${MAX_VERSIONS} versions; make a new key instead`);
          }
          const primary = await this.#fromStore(() => this.#store.get(record.primary), budget);
          if (primary === undefined) throw new KeycellError("key_not_found", "no key with that id");
          const made = await this.#sealedRecord(Op.GENERATE, new Uint8Array([KEY_SPEC_CODES[primary.keySpec]]));
          version = { id: made.id, keySpec: made.keySpec, publicKey: made.spki, sealed: made.sealed! };
          const last = record.versions[record.versions.length - 1].version;
          to = { ...record, primary: made.id, versions: [...record.versions, { id: made.id, version: last + 1, created: this.#now() }] };
          break;
        }
        case "disable":
        case "enable": {
          if (record.state === "pending_deletion") throw stateError(record);
          const state = change.action === "enable" ? "enabled" : "disabled";
          if (record.state === state) return await this.#details(record, record.primary, budget);
          to = { ...record, state };
          break;
        }
        case "schedule_deletion": {
          const days = change.pendingWindowDays ?? PENDING_WINDOW_DAYS.default;
          if (!Number.isInteger(days) || days < PENDING_WINDOW_DAYS.min || days > PENDING_WINDOW_DAYS.max) {
            throw new KeycellError("bad_request", `pendingWindowDays: a whole number of days from ${PENDING_WINDOW_DAYS.min} to ${PENDING_WINDOW_DAYS.max}`);
          }
          if (record.state === "pending_deletion") throw stateError(record);
          to = { ...record, state: "pending_deletion", deletionDate: this.#now() + days * DAY_MS };
          break;
        }
        case "cancel_deletion": {
          if (record.state !== "pending_deletion") throw new KeycellError("bad_request", "the key is not scheduled for deletion");
          // As AWS KMS does: a key whose deletion is cancelled is disabled, to be enabled on purpose.
          const { deletionDate: _, ...rest } = record;
          to = { ...rest, state: "disabled" };
          break;
        }
        default:
          throw new KeycellError("bad_request", "unknown key change");
      }
      let written: boolean;
      try {
        const sealedUnder = version && await this.#masterKeyIdBytes();
        written = await this.#fromStore(() => this.#store.writeName(from, to, version, sealedUnder), budget);
      } catch (err) {
        // The old primary stays primary; the guest forgets the version the store does not hold.
        if (version !== undefined) await this.#inner.deleteKey(version.id).catch(() => {});
        throw err;
      }
      if (!written) {
        if (version !== undefined) await this.#inner.deleteKey(version.id).catch(() => {});
        continue;
      }
      this.#forget(to);
      if (version !== undefined) {
        this.#remember(version.id);
        // A name published in the JWKS stays published: verifiers find its new kid there too.
        await this.#fromStore(async () => {
          if ((await jwksKeyIds(this.#store)).includes(record.primary)) await markJwks(this.#store, version!.id, true);
        }, budget).catch(() => {});
      }
      return await this.#details(to, to.primary, budget);
    }
    throw new KeycellError("signer_unavailable", "the key kept changing; try again");
  }

  /**
   * Deletes every named key whose scheduled deletion is due (ms since the epoch, `now` by
   * default); resolves with how many. Keys are also deleted when found due on use.
   */
  async sweepDeletions(now = this.#now()): Promise<number> {
    let deleted = 0;
    for (const name of await this.#fromStore(() => this.#store.dueDeletions(now))) {
      const record = await this.#fromStore(() => this.#store.getName(name));
      if (record?.state === "pending_deletion" && (record.deletionDate ?? 0) <= now && await this.#deleteNamed({ record, stored: true }, this.#budget())) deleted++;
    }
    return deleted;
  }

  /**
   * Sweeps due deletions now and every `everyMs` after, until {@linkcode stopSweeping} or
   * {@linkcode close}; a sweep that fails is tried again at the next.
   */
  startSweeping(everyMs: number): void {
    this.stopSweeping();
    const sweep = () => void this.sweepDeletions().catch((err) => console.error(`keycell: the deletion sweep failed: ${(err as Error).message}`));
    sweep();
    this.#sweeper = setInterval(sweep, everyMs);
  }

  stopSweeping(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  /**
   * The name `ref` names, a key id standing for the name its key is a version of. A name whose
   * deletion is due is deleted here, and is not found.
   */
  async #named(ref: string, budget: StoreBudget): Promise<Named> {
    const found = await this.#fromStore(() => this.#store.getName(ref), budget);
    let named: Named | undefined = found && { record: found, stored: true };
    if (named === undefined && KEY_ID_PATTERN.test(ref)) {
      const key = await this.#fromStore(() => this.#store.get(ref), budget);
      if (key?.name !== undefined) {
        const record = await this.#fromStore(() => this.#store.getName(key.name!), budget);
        named = record && { record, stored: true };
      } else if (key !== undefined) {
        named = { record: { name: key.id, primary: key.id, versions: [{ id: key.id, version: 1 }], state: "enabled" }, stored: false };
      }
    }
    const notFound = () => new KeycellError("key_not_found", KEY_ID_PATTERN.test(ref) ? "no key with that id" : "no key with that name");
    if (named === undefined) throw notFound();
    const { record } = named;
    if (record.state === "pending_deletion" && (record.deletionDate ?? 0) <= this.#now()) {
      await this.#deleteNamed(named, budget);
      throw notFound();
    }
    return named;
  }

  /** Deletes a name and its versions if its record is still `named`'s; resolves whether it did. */
  async #deleteNamed({ record, stored }: Named, budget: StoreBudget): Promise<boolean> {
    const ids = record.versions.map((v) => v.id);
    if (!await this.#fromStore(() => this.#store.deleteName(record.name, stored ? record : undefined, ids), budget)) return false;
    this.#forget(record);
    for (const id of ids) {
      // Not in the guest's cache (never opened here, or evicted): nothing to zero there.
      await this.#inner.deleteKey(id).catch(() => {});
      // The JWKS skips ids without a key, so a failure here leaves nothing published.
      await this.#fromStore(() => markJwks(this.#store, id, false), budget).catch(() => {});
    }
    return true;
  }

  /** Makes the next signature with any of a name's versions ask the store again. */
  #forget(record: KeyNameRecord): void {
    this.#primaries.delete(record.name);
    for (const v of record.versions) this.#confirmed.delete(v.id);
  }

  async #details(record: KeyNameRecord, id: string, budget: StoreBudget): Promise<KeyDetails> {
    const key = await this.#fromStore(() => this.#store.get(id), budget);
    if (key === undefined) throw new KeycellError("key_not_found", "no key with that id");
    return { ...record, ...infoOf(key), name: record.name };
  }

  /** Verification needs only the public key the caller brings: no store, no key in the guest. */
  verify(request: VerifyRequest): Promise<boolean> {
    return this.#inner.verify(request);
  }

  async sign(request: SignRequest): Promise<Uint8Array> {
    const budget = this.#budget();
    const confirming = performance.now();
    await this.confirm(request.keyId);
    // The check may be another request's, so its store calls keep their own budget; the time this
    // request waited on it is spent all the same.
    budget.leftMs -= performance.now() - confirming;
    try {
      return await this.#inner.sign(request);
    } catch (err) {
      if (!(err instanceof KeycellError && err.code === "key_not_found")) throw err;
    }
    // The store holds the key once it is unsealed, so a guest that still answers "not found" has
    // lost it since (re-created after a trap, or its cache let it go for other keys): open it again.
    for (let attempt = 0; attempt < UNSEAL_ATTEMPTS; attempt++) {
      await this.#unseal(request.keyId, budget);
      try {
        return await this.#inner.sign(request);
      } catch (err) {
        if (!(err instanceof KeycellError && err.code === "key_not_found")) throw err;
      }
    }
    throw new KeycellError("signer_unavailable", "the guests could not keep the key open; try again");
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
    if (this.#fresh(id)) return Promise.resolve();
    const confirmedAt = this.#confirmed.get(id);
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
        let record: KeyNameRecord | undefined;
        const budget = this.#budget();
        try {
          stored = await this.#fromStore(() => this.#store.get(id), budget);
          if (stored !== undefined) record = await this.#fromStore(() => this.#store.getName(stored!.name ?? id), budget);
        } catch {
          return;
        }
        if (stored !== undefined && (record === undefined || record.state === "enabled")) return this.#remember(id);
        this.#confirmed.delete(id);
        if (stored !== undefined) throw stateError(record!);
        await this.#inner.deleteKey(id).catch(() => {});
        throw new KeycellError("key_not_found", "no key with that id");
      })().finally(() => this.#confirming.delete(id));
      this.#confirming.set(id, check);
    }
    return check;
  }

  /** Whether the store showed the key within `recheckMs`. */
  #fresh(id: string): boolean {
    const confirmedAt = this.#confirmed.get(id);
    return confirmedAt !== undefined && performance.now() - confirmedAt < this.#recheckMs;
  }

  #remember(id: string): void {
    if (this.#confirmed.size >= MAX_CONFIRMED) this.#confirmed.clear();
    this.#confirmed.set(id, performance.now());
  }

  async generate(keySpec: KeySpec, metadata: KeyMetadata = {}): Promise<KeyInfo> {
    checkKeyMetadata(metadata);
    const record = await this.#sealedRecord(Op.GENERATE, new Uint8Array([KEY_SPEC_CODES[keySpec]]));
    return await this.#keep(record, metadata);
  }

  /**
   * Imports a key wrapped to the guest's wrapping key ({@linkcode wrappingKey}): the 512-byte
   * RSA-OAEP-SHA-256 ciphertext of an AES-256 key, then the RFC 5649 wrap of the PKCS#8 DER.
   */
  async importWrapped(keySpec: KeySpec, wrapped: Uint8Array, metadata: KeyMetadata = {}): Promise<KeyInfo> {
    checkKeyMetadata(metadata);
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
    return await this.#keep(record, metadata);
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

  /**
   * Removes a named key at once, every version of it: the blobs leave the store, then the guest
   * drops (and zeroes) each.
   */
  async deleteKey(ref: string): Promise<void> {
    const budget = this.#budget();
    for (let attempt = 0; attempt < CHANGE_ATTEMPTS; attempt++) {
      if (await this.#deleteNamed(await this.#named(ref, budget), budget)) return;
    }
    throw new KeycellError("signer_unavailable", "the key kept changing; try again");
  }

  /** The ids in the store's JWKS set. */
  jwksKeyIds(): Promise<string[]> {
    return this.#fromStore(() => jwksKeyIds(this.#store));
  }

  /** Puts a stored key into the store's JWKS set, or takes it out. */
  async setJwks(id: string, on: boolean): Promise<void> {
    const budget = this.#budget();
    const stored = await this.#fromStore(() => this.#store.get(id), budget);
    if (stored !== undefined || !on) await this.#fromStore(() => markJwks(this.#store, id, on), budget);
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
    this.stopSweeping();
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

  async #unseal(id: string, budget = this.#budget()): Promise<void> {
    const stored = await this.#fromStore(() => this.#store.get(id), budget);
    if (stored === undefined) throw new KeycellError("key_not_found", "no key with that id");
    try {
      await this.#call(Op.UNSEAL, keyIdBytes(id)!, stored.sealed);
    } catch (err) {
      // A blob resealed by a rotation this node's master key is not part of: the node, not the key, is out of date.
      if (err instanceof KeycellError && err.code === "key_unusable") {
        const recorded = await this.#fromStore(() => this.#store.getMeta(META.MASTER_KEY_ID), budget);
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

  /**
   * Stores a key the guest just made or imported, with its name's record; if the store fails,
   * the guest forgets it too. A key stored already (imported again) is answered as it is,
   * unless a name was asked for.
   */
  async #keep(record: KeyRecord, metadata: KeyMetadata): Promise<KeyInfo> {
    const key: StoredKey = { id: record.id, keySpec: record.keySpec, publicKey: record.spki, sealed: record.sealed! };
    const now = this.#now();
    const named: KeyNameRecord = {
      name: metadata.name ?? key.id,
      primary: key.id,
      versions: [{ id: key.id, version: 1, created: now }],
      state: "enabled",
      created: now,
      ...(metadata.description !== undefined ? { description: metadata.description } : {}),
      ...(metadata.labels !== undefined ? { labels: metadata.labels } : {}),
    };
    let existing: StoredKey | undefined;
    const budget = this.#budget();
    try {
      const sealedUnder = await this.#masterKeyIdBytes();
      if (!await this.#fromStore(() => this.#store.writeName(undefined, named, key, sealedUnder), budget)) {
        existing = await this.#fromStore(() => this.#store.get(key.id), budget);
        if (existing === undefined || metadata.name !== undefined) {
          throw new KeycellError("key_name_taken", existing === undefined ? "a key has that name" : "that key is stored already");
        }
      }
    } catch (err) {
      await this.#inner.deleteKey(record.id).catch(() => {});
      throw err;
    }
    if (existing !== undefined) return infoOf(existing);
    this.#remember(key.id);
    return { id: key.id, keySpec: key.keySpec, publicKey: key.publicKey, ...(metadata.name !== undefined ? { name: metadata.name } : {}) };
  }

  async #loadWrappingKey(): Promise<WrappingKey> {
    const budget = this.#budget();
    let stored = await this.#fromStore(() => this.#store.getMeta(META.WRAPPING_KEY), budget);
    if (stored === undefined) {
      const made = await this.#sealedRecord(Op.GENERATE, new Uint8Array([WRAPPING_KEY_SPEC]));
      // Another node may have stored one meanwhile; everyone uses whichever was stored first.
      const value = encodeWrappingKey({ id: made.id, spki: made.spki, sealed: made.sealed! });
      const sealedUnder = await this.#masterKeyIdBytes();
      stored = await this.#fromStore(() => this.#store.setMetaOnce(META.WRAPPING_KEY, value, sealedUnder), budget);
    }
    return decodeWrappingKey(stored);
  }

  #call(op: Op, ...parts: Uint8Array[]): Promise<Uint8Array> {
    return sealingCall(this.#inner.transport, op, ...parts);
  }

  /** A request's whole time for the store. */
  #budget(): StoreBudget {
    return { leftMs: this.#storeTimeoutMs };
  }

  /**
   * Runs a store call within what is left of `budget` (a budget of its own by default) and takes
   * the time it took from it; any failure is `signer_unavailable`.
   */
  async #fromStore<T>(work: () => Promise<T>, budget: StoreBudget = this.#budget()): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const started = performance.now();
    try {
      if (budget.leftMs <= 0) throw new Error("timed out");
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("timed out")), budget.leftMs);
      });
      return await Promise.race([work(), timeout]);
    } catch (err) {
      if (err instanceof KeycellError) throw err;
      log.error(`key store (${this.#store.kind}) failed: ${(err as Error).message}`, { store: this.#store.kind });
      throw new KeycellError("signer_unavailable", "the key store is not available");
    } finally {
      clearTimeout(timer);
      budget.leftMs -= performance.now() - started;
    }
  }
}

/** A stored key's public parts. */
function infoOf(key: StoredKey): KeyInfo {
  return { id: key.id, keySpec: key.keySpec, publicKey: key.publicKey, ...(key.name !== undefined ? { name: key.name } : {}) };
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
