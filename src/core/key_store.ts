/**
 * The key store: where sealed keys live between starts, shared by every node that uses the same
 * store. It holds sealed blobs and public keys only; no plaintext key ever reaches it, and the
 * master key that opens the blobs stays in each node's guest.
 *
 * @module
 */

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

/** Names of the store's metadata entries. */
export const META = {
  /** The id of the master key the store's blobs are sealed under. */
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
  /** Stores a key; a key already stored under that id is kept as it is. Resolves whether it was added. */
  put(key: StoredKey): Promise<boolean>;
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
  /** Keys with ids after `cursor`, at most `limit`. */
  list(options: { limit: number; cursor?: string }): Promise<KeyPage>;
  count(): Promise<number>;
  getMeta(name: string): Promise<Uint8Array | undefined>;
  /** Sets a metadata entry unless it is already set; resolves with the value now stored. */
  setMetaOnce(name: string, value: Uint8Array): Promise<Uint8Array>;
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
