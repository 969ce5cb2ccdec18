/**
 * The key store: where sealed keys live between starts, shared by every node that uses the same
 * store. It holds sealed blobs and public keys only; no plaintext key ever reaches it, and the
 * master key that opens the blobs stays in each node's guest.
 *
 * @module
 */

import { KeycellError } from "./errors.ts";
import type { KeySpec } from "./protocol.ts";
import type { KeylessNames } from "./key_names.ts";

/** One stored key: its public parts and its sealed blob (not secret). */
export interface StoredKey {
  /** Lowercase hex SHA-256 of the SPKI. */
  id: string;
  keySpec: KeySpec;
  /** SubjectPublicKeyInfo DER. */
  publicKey: Uint8Array;
  /** The key sealed under the master key by the guest. */
  sealed: Uint8Array;
  /** The name whose version this key is; absent for a key that is its own name (named by its id). */
  name?: string;
}

/** A key as listed: everything but the blob. */
export type ListedKey = Omit<StoredKey, "sealed">;

/** One page of {@linkcode KeyStore.list}, in id order. */
export interface KeyPage {
  keys: ListedKey[];
  /** Pass back to get the next page; absent on the last page. */
  nextCursor?: string;
}

/** What {@linkcode KeyStore.list} takes. */
export interface ListOptions {
  /** At most this many keys. */
  limit: number;
  /** Only keys with ids after this one (a previous page's `nextCursor`). */
  cursor?: string;
  /**
   * Only keys with these ids (a token's scope): the page, and its cursor, then say nothing of the
   * others.
   */
  ids?: ReadonlySet<string>;
}

/** Where a named key is in its life: it signs only while `enabled`. */
export type KeyState = typeof KEY_STATES[number];

/** Every {@linkcode KeyState}, for validators. */
export const KEY_STATES = ["enabled", "disabled", "pending_deletion"] as const;

/** One version of a named key: a key of its own, with its own id. */
export interface KeyVersion {
  id: string;
  /** 1 for the key the name was made with, one more for each rotation. */
  version: number;
  /** When it was made (ms since the epoch); absent for keys stored before names. */
  created?: number;
}

/**
 * A named key as the store keeps it: its versions, which one signs for the name, and its
 * metadata. A key stored without a record is a name of its own (its id) with that one version,
 * enabled: every key stored before names is.
 */
export interface KeyNameRecord {
  name: string;
  /** The id of the version that signs for the name. */
  primary: string;
  /** Every version, oldest first; none is ever dropped but with the name. */
  versions: KeyVersion[];
  state: KeyState;
  /** ms since the epoch; absent for keys stored before names. */
  created?: number;
  description?: string;
  labels?: Record<string, string>;
  /** `pending_deletion` only: when the key may be deleted (ms since the epoch). */
  deletionDate?: number;
}

/**
 * The one byte form of a {@linkcode KeyNameRecord} (JSON, fields and labels in a fixed order), so
 * that stores compare records by their bytes.
 *
 * @example
 * ```ts
 * import { decodeKeyName, encodeKeyName } from "./key_store.ts";
 *
 * const id = "ab".repeat(32);
 * const record = { name: "web", primary: id, versions: [{ id, version: 1 }], state: "enabled" as const };
 * decodeKeyName(encodeKeyName(record)).primary === id; // true
 * ```
 */
export function encodeKeyName(record: KeyNameRecord): Uint8Array {
  const labels = record.labels && Object.fromEntries(Object.entries(record.labels).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0));
  return new TextEncoder().encode(JSON.stringify({
    name: record.name,
    primary: record.primary,
    versions: record.versions.map((v) => ({ id: v.id, version: v.version, created: v.created })),
    state: record.state,
    created: record.created,
    description: record.description,
    labels,
    deletionDate: record.deletionDate,
  }));
}

/**
 * Reads {@linkcode encodeKeyName}'s bytes.
 *
 * @example
 * ```ts
 * import { decodeKeyName } from "./key_store.ts";
 *
 * decodeKeyName(new TextEncoder().encode('{"name":"web","primary":"","versions":[],"state":"disabled"}')).state; // "disabled"
 * ```
 */
export function decodeKeyName(bytes: Uint8Array): KeyNameRecord {
  return JSON.parse(new TextDecoder().decode(bytes));
}

/**
 * Whether a stored record is `expected` (both absent counts), compared by their bytes.
 *
 * @example
 * ```ts
 * import { sameRecord } from "./key_store.ts";
 *
 * sameRecord(undefined, undefined); // true
 * ```
 */
export function sameRecord(stored: KeyNameRecord | undefined, expected: KeyNameRecord | undefined): boolean {
  if (stored === undefined || expected === undefined) return stored === expected;
  const [a, b] = [encodeKeyName(stored), encodeKeyName(expected)];
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * A key as stored as a version of `name`: a key that is its own name (named by its id) is
 * stored without one.
 *
 * @example
 * ```ts
 * import { versionOf } from "./key_store.ts";
 *
 * const key = { id: "ab".repeat(32), keySpec: "ECC_NIST_P256" as const, publicKey: new Uint8Array(), sealed: new Uint8Array() };
 * versionOf(key, "web").name; // "web"
 * versionOf(key, key.id).name; // undefined
 * ```
 */
export function versionOf(key: StoredKey, name: string): StoredKey {
  const { name: _, ...rest } = key;
  return name === key.id ? rest : { ...rest, name };
}

/** Names of the store's metadata entries. */
export const META = {
  /**
   * The id of the master key the store's blobs are sealed under (32 bytes); while a rotation
   * runs, the old id followed by the new one (64 bytes), which fences every node off sealing
   * ({@linkcode KeyStore.put} with `sealedUnder`).
   */
  MASTER_KEY_ID: "master_key_id",
  /** The wrapping key: `id (32) || spki length (u16 BE) || spki || sealed blob`. */
  WRAPPING_KEY: "wrapping_key",
  /**
   * The ids of the keys `GET /.well-known/jwks.json` publishes: a format byte (1) followed by the
   * sorted 32-byte ids, changed only by compare-and-set (`src/core/jwks_set.ts`).
   */
  JWKS: "jwks_keys",
} as const;

/**
 * Sealed key storage. Every method may reject when the backing store is down; callers turn that
 * into `signer_unavailable`, never into "not found".
 *
 * @example
 * ```ts
 * import type { KeyStore, StoredKey } from "./key_store.ts";
 *
 * async function keep(store: KeyStore, key: StoredKey): Promise<number> {
 *   await store.put(key); // a key already stored under key.id is kept as it is
 *   const page = await store.list({ limit: 100 });
 *   return page.keys.length;
 * }
 * ```
 */
export interface KeyStore {
  /** Which backend this is, for logs. */
  readonly kind: string;
  /**
   * Stores a key; a key already stored under that id is kept as it is. Resolves whether it was
   * added. With `sealedUnder` (the id of the master key that sealed the blob), the key is stored
   * only while the store's {@linkcode META.MASTER_KEY_ID} is that id or unset, checked in the same
   * transaction as the insert: a node whose master key a rotation is replacing, or has replaced,
   * is refused ({@linkcode SealedUnderOtherKey}) instead of storing a blob the rotation would miss.
   */
  put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean>;
  /** Stores many keys in one transaction, keeping any already stored. */
  putMany(keys: StoredKey[]): Promise<void>;
  get(id: string): Promise<StoredKey | undefined>;
  /** Resolves whether a key was removed. */
  delete(id: string): Promise<boolean>;
  /**
   * The id of the key with this SKI, or else this RSA certificate digest (`keylessNames` in
   * src/keyless/keys.ts), from indexes the store keeps on every key it stores.
   */
  findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined>;
  /** Keys with ids after `cursor` (and among `ids`, when given), at most `limit`. */
  list(options: ListOptions): Promise<KeyPage>;
  count(): Promise<number>;
  getMeta(name: string): Promise<Uint8Array | undefined>;
  /**
   * Sets a metadata entry unless it is already set; resolves with the value now stored. With
   * `sealedUnder`, fenced as {@linkcode KeyStore.put} is.
   */
  setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array>;
  /**
   * Replaces a key's sealed blob, if it still holds `from` (a key deleted or changed meanwhile is
   * left alone). Resolves whether it was replaced. For master key rotation.
   */
  replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean>;
  /** Replaces a metadata entry, if it still holds `from`. Resolves whether it was replaced. */
  replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean>;
  /** The record of a named key; `undefined` for a key without one (a name of its own, or none). */
  getName(name: string): Promise<KeyNameRecord | undefined>;
  /**
   * Replaces a name's record `from` (`undefined`: it has none) by `to`, and with it, in the same
   * transaction, stores `key` (a new version, stored with `name` set to `to.name`). Resolves
   * false, having changed nothing, when the record is no longer `from` or `key`'s id is stored
   * already. With `sealedUnder`, fenced as {@linkcode KeyStore.put} is.
   */
  writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean>;
  /**
   * Removes a name's record, if it is still `from` (`undefined`: it has none), and the keys
   * `ids`, in one transaction. Resolves whether it did.
   */
  deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean>;
  /** The names pending deletion whose deletion date is `now` or earlier (ms since the epoch). */
  dueDeletions(now: number): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * A store refused a blob sealed under a master key that is not (or no longer) the store's: a
 * rotation is under way, or has finished, elsewhere.
 *
 * @example
 * ```ts
 * import { SealedUnderOtherKey } from "./key_store.ts";
 *
 * const err = new SealedUnderOtherKey();
 * console.log(err.code); // "signer_unavailable"
 * ```
 */
export class SealedUnderOtherKey extends KeycellError {
  constructor() {
    super(
      "signer_unavailable",
      "the key store's keys are being resealed, or were resealed, under a new master key: this node cannot add keys " +
        "until it is restarted with the store's master key",
    );
  }
}

/**
 * Whether a {@linkcode META.MASTER_KEY_ID} value lets a blob sealed under `sealedUnder` in:
 * unset, or exactly that id.
 *
 * @example
 * ```ts
 * import { admitsSealedUnder } from "./key_store.ts";
 *
 * admitsSealedUnder(undefined, new Uint8Array(32)); // true
 * ```
 */
export function admitsSealedUnder(recorded: Uint8Array | undefined, sealedUnder: Uint8Array): boolean {
  return recorded === undefined || (recorded.length === sealedUnder.length && recorded.every((b, i) => b === sealedUnder[i]));
}

/**
 * Builds a page from up to `limit + 1` rows in id order: the extra row only says there is more.
 *
 * @example
 * ```ts
 * import { type ListedKey, pageOf } from "./key_store.ts";
 *
 * const row = (n: number): ListedKey => ({ id: n.toString(16).padStart(64, "0"), keySpec: "RSA_2048", publicKey: new Uint8Array() });
 * const rowsAfterCursor = [row(1), row(2), row(3)]; // limit + 1 rows
 * const page = pageOf(rowsAfterCursor, 2);
 * page.keys.length; // 2
 * page.nextCursor === row(2).id; // true
 * ```
 */
export function pageOf(rows: ListedKey[], limit: number): KeyPage {
  if (rows.length <= limit) return { keys: rows };
  const keys = rows.slice(0, limit);
  return { keys, nextCursor: keys[keys.length - 1].id };
}
