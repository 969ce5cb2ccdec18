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
  decodeKeyName,
  encodeKeyName,
  type KeyNameRecord,
  type KeyPage,
  type ListedKey,
  sameRecord,
  versionOf,
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
  CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, record BLOB NOT NULL, deletion_due INTEGER) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS names_by_deletion ON names (deletion_due) WHERE deletion_due IS NOT NULL;
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
    // Stores from before named keys: every key they hold is a name of its own (name NULL).
    if (!sql.exec("SELECT name FROM pragma_table_info('keys')").toArray().some((c) => c.name === "name")) {
      sql.exec("ALTER TABLE keys ADD COLUMN name TEXT");
    }
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
      "INSERT OR IGNORE INTO keys (id, key_spec, public_key, sealed, ski, cert_digest, name) VALUES (?, ?, ?, ?, ?, ?, ?)",
      key.id,
      key.keySpec,
      key.publicKey,
      key.sealed,
      names?.ski ?? null,
      names?.certificateDigest ?? null,
      key.name ?? null,
    );
  }

  get(id: string): Promise<StoredKey | undefined> {
    return run(() => {
      const row = this.#sql.exec("SELECT id, key_spec, public_key, sealed, name FROM keys WHERE id = ?", id).toArray()[0];
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
          "SELECT id, key_spec, public_key, name FROM keys WHERE id IN (SELECT value FROM json_each(?)) AND id > ? ORDER BY id LIMIT ?",
          JSON.stringify([...ids]),
          cursor ?? "",
          limit + 1,
        ).toArray()
        : this.#sql.exec("SELECT id, key_spec, public_key, name FROM keys WHERE id > ? ORDER BY id LIMIT ?", cursor ?? "", limit + 1).toArray();
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

  getName(name: string): Promise<KeyNameRecord | undefined> {
    return run(() => this.#record(name));
  }

  writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return run(() =>
      this.#transaction(() => {
        if (sealedUnder !== undefined) this.#fence(sealedUnder);
        if (!sameRecord(this.#record(to.name), from)) return false;
        if (key !== undefined && !this.#insert(versionOf(key, to.name))) return false;
        const due = to.state === "pending_deletion" ? to.deletionDate ?? 0 : null;
        this.#write("INSERT OR REPLACE INTO names (name, record, deletion_due) VALUES (?, ?, ?)", to.name, encodeKeyName(to), due);
        return true;
      })
    );
  }

  deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean> {
    return run(() =>
      this.#transaction(() => {
        if (!sameRecord(this.#record(name), from)) return false;
        this.#write("DELETE FROM names WHERE name = ?", name);
        for (const id of ids) this.#write("DELETE FROM keys WHERE id = ?", id);
        return true;
      })
    );
  }

  dueDeletions(now: number): Promise<string[]> {
    return run(() => this.#sql.exec("SELECT name FROM names WHERE deletion_due <= ? ORDER BY name", now).toArray().map((r) => r.name as string));
  }

  #record(name: string): KeyNameRecord | undefined {
    const row = this.#sql.exec("SELECT record FROM names WHERE name = ?", name).toArray()[0];
    return row && decodeKeyName(bytes(row.record));
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

function listed(row: Record<string, unknown>): ListedKey {
  const key: ListedKey = { id: row.id as string, keySpec: row.key_spec as KeySpec, publicKey: bytes(row.public_key) };
  if (row.name) key.name = row.name as string;
  return key;
}
