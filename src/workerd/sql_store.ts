/**
 * The key store inside a Durable Object: its SQLite storage (`ctx.storage.sql`), holding sealed
 * blobs, public keys and the store's metadata, never a plaintext key. Written against the few
 * calls it uses, so Deno's `node:sqlite` can stand in for it in tests.
 *
 * @module
 */

import type { KeySpec } from "../core/protocol.ts";
import { type KeylessNames, keylessNames } from "../core/key_names.ts";
import {
  admitsSealedUnder,
  type KeyPage,
  type KeyStore,
  type ListOptions,
  META,
  pageOf,
  SealedUnderOtherKey,
  type StoredKey,
} from "../core/key_store.ts";

/** The part of a Durable Object's `SqlStorage` the store uses. */
export interface SqlStorage {
  exec(query: string, ...bindings: unknown[]): { toArray(): Record<string, unknown>[]; readonly rowsWritten: number };
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    key_spec TEXT NOT NULL,
    public_key BLOB NOT NULL,
    sealed BLOB NOT NULL,
    ski BLOB,
    cert_digest BLOB
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS keys_by_ski ON keys (ski) WHERE ski IS NOT NULL;
  CREATE INDEX IF NOT EXISTS keys_by_cert_digest ON keys (cert_digest) WHERE cert_digest IS NOT NULL;
`;

/**
 * A {@linkcode KeyStore} on SQL storage that runs each call to completion synchronously.
 *
 * @example
 * ```ts
 * import { SqlKeyStore, type SqlStorage } from "./sql_store.ts";
 * import type { StoredKey } from "../core/key_store.ts";
 *
 * type DurableObjectContext = { storage: { sql: SqlStorage; transactionSync<T>(work: () => T): T } };
 *
 * // Inside the Durable Object, whose ctx.storage holds the SQLite database.
 * async function keep(ctx: DurableObjectContext, key: StoredKey): Promise<boolean> {
 *   const store = new SqlKeyStore(ctx.storage.sql, (work) => ctx.storage.transactionSync(work));
 *   return await store.put(key); // false when a key is stored under key.id already
 * }
 * ```
 */
export class SqlKeyStore implements KeyStore {
  readonly kind = "durable-object";
  readonly #sql: SqlStorage;
  readonly #transaction: <T>(work: () => T) => T;

  /** Creates the tables when they are missing. `transaction` runs its work atomically. */
  constructor(sql: SqlStorage, transaction: <T>(work: () => T) => T) {
    this.#sql = sql;
    this.#transaction = transaction;
    sql.exec(SCHEMA);
  }

  put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    if (sealedUnder === undefined) return run(() => this.#insert(key));
    return run(() => this.#transaction(() => (this.#fence(sealedUnder), this.#insert(key))));
  }

  putMany(keys: StoredKey[]): Promise<void> {
    return run(() => this.#transaction(() => keys.forEach((key) => this.#insert(key))));
  }

  #insert(key: StoredKey): boolean {
    const names = keylessNames(key.publicKey);
    return this.#write(
      "INSERT OR IGNORE INTO keys (id, key_spec, public_key, sealed, ski, cert_digest) VALUES (?, ?, ?, ?, ?, ?)",
      key.id,
      key.keySpec,
      key.publicKey,
      key.sealed,
      names?.ski ?? null,
      names?.certificateDigest ?? null,
    );
  }

  get(id: string): Promise<StoredKey | undefined> {
    return run(() => {
      const row = this.#sql.exec("SELECT id, key_spec, public_key, sealed FROM keys WHERE id = ?", id).toArray()[0];
      return row && { ...listed(row), sealed: bytes(row.sealed) };
    });
  }

  delete(id: string): Promise<boolean> {
    return run(() => this.#write("DELETE FROM keys WHERE id = ?", id));
  }

  findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined> {
    return run(() => {
      const [column, value] = by.ski ? ["ski", by.ski] : by.certificateDigest ? ["cert_digest", by.certificateDigest] : [];
      if (column === undefined) return undefined;
      return this.#sql.exec(`SELECT id FROM keys WHERE ${column} = ?`, value).toArray()[0]?.id as string | undefined;
    });
  }

  list({ limit, cursor, ids }: ListOptions): Promise<KeyPage> {
    return run(() => {
      // The ids go in as one JSON array: a query takes at most 100 bound parameters on Cloudflare.
      const rows = ids !== undefined
        ? this.#sql.exec(
          "SELECT id, key_spec, public_key FROM keys WHERE id IN (SELECT value FROM json_each(?)) AND id > ? ORDER BY id LIMIT ?",
          JSON.stringify([...ids]),
          cursor ?? "",
          limit + 1,
        ).toArray()
        : this.#sql.exec("SELECT id, key_spec, public_key FROM keys WHERE id > ? ORDER BY id LIMIT ?", cursor ?? "", limit + 1).toArray();
      return pageOf(rows.map(listed), limit);
    });
  }

  count(): Promise<number> {
    return run(() => Number(this.#sql.exec("SELECT count(*) AS n FROM keys").toArray()[0].n));
  }

  getMeta(name: string): Promise<Uint8Array | undefined> {
    return run(() => this.#meta(name));
  }

  setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array> {
    const insert = () => this.#write("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", name, value);
    return run(() => {
      if (sealedUnder === undefined) insert();
      else this.#transaction(() => (this.#fence(sealedUnder), insert()));
      return this.#meta(name)!;
    });
  }

  replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return run(() => this.#write("UPDATE keys SET sealed = ? WHERE id = ? AND sealed = ?", to, id, from));
  }

  replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return run(() => this.#write("UPDATE meta SET value = ? WHERE name = ? AND value = ?", to, name, from));
  }

  /** The storage belongs to the Durable Object, which outlives this call. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  /** Runs a write to completion; answers whether it changed a row. */
  #write(query: string, ...bindings: unknown[]): boolean {
    const cursor = this.#sql.exec(query, ...bindings);
    cursor.toArray();
    return cursor.rowsWritten > 0;
  }

  /** Throws unless the store's master key id admits a blob sealed under `sealedUnder`; call inside a transaction. */
  #fence(sealedUnder: Uint8Array): void {
    if (!admitsSealedUnder(this.#meta(META.MASTER_KEY_ID), sealedUnder)) throw new SealedUnderOtherKey();
  }

  #meta(name: string): Uint8Array | undefined {
    const row = this.#sql.exec("SELECT value FROM meta WHERE name = ?", name).toArray()[0];
    return row && bytes(row.value);
  }
}

/** SQL storage is synchronous; this keeps the interface's promise of rejecting rather than throwing. */
function run<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (err) {
    return Promise.reject(err);
  }
}

/** A BLOB column: an ArrayBuffer in a Durable Object, a Uint8Array in node:sqlite. */
function bytes(value: unknown): Uint8Array {
  return new Uint8Array(value as ArrayBuffer);
}

function listed(row: Record<string, unknown>): { id: string; keySpec: KeySpec; publicKey: Uint8Array } {
  return { id: row.id as string, keySpec: row.key_spec as KeySpec, publicKey: bytes(row.public_key) };
}
