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
