/**
 * The key store on SQLite, whichever platform's API reaches the database: the schema, its
 * migrations for stores made by older versions, and every query. A platform supplies a
 * {@linkcode SqlDatabase} (Deno's `node:sqlite` file in `src/deno/store/sqlite.ts`, a Durable
 * Object's storage in `src/workerd/sql_store.ts`).
 *
 * @module
 */

import type { KeySpec } from "./protocol.ts";
import { type KeylessNames, keylessNames } from "./key_names.ts";
import {
  admitsSealedUnder,
  decodeKeyName,
  encodeKeyName,
  type KeyNameRecord,
  type KeyPage,
  type KeyStore,
  type ListedKey,
  type ListOptions,
  META,
  pageOf,
  sameRecord,
  SealedUnderOtherKey,
  type StoredKey,
  versionOf,
} from "./key_store.ts";

/** A value bound to a query parameter. */
export type SqlParameter = string | number | Uint8Array | null;

/** One row a query answers, by column name. */
export type SqlRow = Record<string, unknown>;

/** The calls the store makes on a SQLite database; each runs to completion before it returns. */
export interface SqlDatabase {
  /** The rows of one statement, with its `?` parameters bound in order. */
  query(sql: string, ...parameters: SqlParameter[]): SqlRow[];
  /** Runs one statement that writes; answers whether it wrote a row. */
  run(sql: string, ...parameters: SqlParameter[]): boolean;
  /** Runs `work` atomically, holding the write lock from the start, so what it reads stays true until it commits. */
  transaction<T>(work: () => T): T;
  /** Lets the database go (a no-op where the platform owns it). */
  close(): void;
}

const TABLES = [
  `CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    key_spec TEXT NOT NULL,
    public_key BLOB NOT NULL,
    sealed BLOB NOT NULL,
    ski BLOB,
    cert_digest BLOB
  ) WITHOUT ROWID`,
  "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
];

/** Keyless names, indexed; and the keys still without them (none, once a store is named). */
const NAME_INDEXES = [
  "CREATE INDEX IF NOT EXISTS keys_by_ski ON keys (ski) WHERE ski IS NOT NULL",
  "CREATE INDEX IF NOT EXISTS keys_by_cert_digest ON keys (cert_digest) WHERE cert_digest IS NOT NULL",
  "CREATE INDEX IF NOT EXISTS keys_unnamed ON keys (id) WHERE ski IS NULL",
];

/** Named keys: each key's name, and each name's record. */
const NAMES = [
  "CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, record BLOB NOT NULL, deletion_due INTEGER) WITHOUT ROWID",
  "CREATE INDEX IF NOT EXISTS names_by_deletion ON names (deletion_due) WHERE deletion_due IS NOT NULL",
];

const INSERT_KEY = "INSERT OR IGNORE INTO keys (id, key_spec, public_key, sealed, ski, cert_digest, name) VALUES (?, ?, ?, ?, ?, ?, ?)";
const DELETE_KEY = "DELETE FROM keys WHERE id = ?";

/**
 * A {@linkcode KeyStore} on a {@linkcode SqlDatabase}. Creating it creates the tables, brings a
 * store made by an older version up to date, and names its keys that have no Keyless names yet.
 *
 * @example
 * ```ts
 * import { SqlKeyStore, type SqlDatabase } from "./sql_key_store.ts";
 *
 * // `db` is a platform's SQLite database behind the four calls of SqlDatabase.
 * async function keyCount(db: SqlDatabase): Promise<number> {
 *   const store = new SqlKeyStore(db, "sqlite");
 *   return await store.count();
 * }
 * ```
 */
export class SqlKeyStore implements KeyStore {
  readonly kind: string;
  readonly #db: SqlDatabase;

  /** Migrates the database as it opens it; `kind` names the backend in logs. */
  constructor(db: SqlDatabase, kind: string) {
    this.kind = kind;
    this.#db = db;
    for (const statement of TABLES) db.run(statement);
    const columns = db.query("SELECT name FROM pragma_table_info('keys')").map((c) => c.name);
    // Stores from before the Keyless names: add the columns; #nameUnnamed then names every key once.
    if (!columns.includes("ski")) {
      db.run("ALTER TABLE keys ADD COLUMN ski BLOB");
      db.run("ALTER TABLE keys ADD COLUMN cert_digest BLOB");
    }
    // Stores from before named keys: every key they hold is a name of its own (name NULL).
    if (!columns.includes("name")) db.run("ALTER TABLE keys ADD COLUMN name TEXT");
    for (const statement of [...NAME_INDEXES, ...NAMES]) db.run(statement);
    this.#nameUnnamed();
  }

  /** Gives the keys a store written before the Keyless names holds their names, 10,000 at a time. */
  #nameUnnamed(): void {
    const unnamed = (after: string) =>
      this.#db.query("SELECT id, public_key FROM keys WHERE ski IS NULL AND id > ? ORDER BY id LIMIT 10000", after);
    for (let rows = unnamed(""); rows.length > 0; rows = unnamed(rows.at(-1)!.id as string)) {
      this.#db.transaction(() => {
        for (const row of rows) {
          const names = keylessNames(bytes(row.public_key));
          if (names !== undefined) this.#db.run("UPDATE keys SET ski = ?, cert_digest = ? WHERE id = ?", names.ski, names.certificateDigest ?? null, row.id as string);
        }
      });
    }
  }

  put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    if (sealedUnder === undefined) return settled(() => this.#insert(key));
    return settled(() => this.#db.transaction(() => (this.#fence(sealedUnder), this.#insert(key))));
  }

  putMany(keys: StoredKey[]): Promise<void> {
    return settled(() => this.#db.transaction(() => keys.forEach((key) => this.#insert(key))));
  }

  #insert(key: StoredKey): boolean {
    const names = keylessNames(key.publicKey);
    return this.#db.run(INSERT_KEY, key.id, key.keySpec, key.publicKey, key.sealed, names?.ski ?? null, names?.certificateDigest ?? null, key.name ?? null);
  }

  get(id: string): Promise<StoredKey | undefined> {
    return settled(() => {
      const row = this.#db.query("SELECT id, key_spec, public_key, sealed, name FROM keys WHERE id = ?", id)[0];
      return row && { ...listed(row), sealed: bytes(row.sealed) };
    });
  }

  delete(id: string): Promise<boolean> {
    return settled(() => this.#db.run(DELETE_KEY, id));
  }

  findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined> {
    return settled(() => {
      const rows = by.ski
        ? this.#db.query("SELECT id FROM keys WHERE ski = ?", by.ski)
        : by.certificateDigest
        ? this.#db.query("SELECT id FROM keys WHERE cert_digest = ?", by.certificateDigest)
        : [];
      return rows[0]?.id as string | undefined;
    });
  }

  list({ limit, cursor, ids }: ListOptions): Promise<KeyPage> {
    return settled(() => {
      // The ids go in as one JSON array: a query takes at most 100 bound parameters on Cloudflare.
      const rows = ids !== undefined
        ? this.#db.query(
          "SELECT id, key_spec, public_key, name FROM keys WHERE id IN (SELECT value FROM json_each(?)) AND id > ? ORDER BY id LIMIT ?",
          JSON.stringify([...ids]),
          cursor ?? "",
          limit + 1,
        )
        : this.#db.query("SELECT id, key_spec, public_key, name FROM keys WHERE id > ? ORDER BY id LIMIT ?", cursor ?? "", limit + 1);
      return pageOf(rows.map(listed), limit);
    });
  }

  count(): Promise<number> {
    return settled(() => Number(this.#db.query("SELECT count(*) AS n FROM keys")[0].n));
  }

  getMeta(name: string): Promise<Uint8Array | undefined> {
    return settled(() => this.#meta(name));
  }

  setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array> {
    const insert = () => this.#db.run("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", name, value);
    return settled(() => {
      if (sealedUnder === undefined) insert();
      else this.#db.transaction(() => (this.#fence(sealedUnder), insert()));
      return this.#meta(name)!;
    });
  }

  replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return settled(() => this.#db.run("UPDATE keys SET sealed = ? WHERE id = ? AND sealed = ?", to, id, from));
  }

  replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return settled(() => this.#db.run("UPDATE meta SET value = ? WHERE name = ? AND value = ?", to, name, from));
  }

  getName(name: string): Promise<KeyNameRecord | undefined> {
    return settled(() => this.#record(name));
  }

  writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return settled(() =>
      this.#db.transaction(() => {
        if (sealedUnder !== undefined) this.#fence(sealedUnder);
        if (!sameRecord(this.#record(to.name), from)) return false;
        if (key !== undefined && !this.#insert(versionOf(key, to.name))) return false;
        const due = to.state === "pending_deletion" ? to.deletionDate ?? 0 : null;
        this.#db.run("INSERT OR REPLACE INTO names (name, record, deletion_due) VALUES (?, ?, ?)", to.name, encodeKeyName(to), due);
        return true;
      })
    );
  }

  deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean> {
    return settled(() =>
      this.#db.transaction(() => {
        if (!sameRecord(this.#record(name), from)) return false;
        this.#db.run("DELETE FROM names WHERE name = ?", name);
        for (const id of ids) this.#db.run(DELETE_KEY, id);
        return true;
      })
    );
  }

  dueDeletions(now: number): Promise<string[]> {
    return settled(() => this.#db.query("SELECT name FROM names WHERE deletion_due <= ? ORDER BY name", now).map((r) => r.name as string));
  }

  close(): Promise<void> {
    return settled(() => this.#db.close());
  }

  #record(name: string): KeyNameRecord | undefined {
    const row = this.#db.query("SELECT record FROM names WHERE name = ?", name)[0];
    return row && decodeKeyName(bytes(row.record));
  }

  #meta(name: string): Uint8Array | undefined {
    const row = this.#db.query("SELECT value FROM meta WHERE name = ?", name)[0];
    return row && bytes(row.value);
  }

  /** Throws unless the store's master key id admits a blob sealed under `sealedUnder`; call inside a transaction. */
  #fence(sealedUnder: Uint8Array): void {
    if (!admitsSealedUnder(this.#meta(META.MASTER_KEY_ID), sealedUnder)) throw new SealedUnderOtherKey();
  }
}

/** The database calls are synchronous; this keeps the interface's promise of rejecting rather than throwing. */
function settled<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (err) {
    return Promise.reject(err);
  }
}

/** A BLOB column, as a copy the caller owns: an ArrayBuffer in a Durable Object, a Uint8Array in node:sqlite. */
function bytes(value: unknown): Uint8Array {
  return new Uint8Array(value as ArrayBuffer);
}

function listed(row: SqlRow): ListedKey {
  const key: ListedKey = { id: row.id as string, keySpec: row.key_spec as KeySpec, publicKey: bytes(row.public_key) };
  if (row.name) key.name = row.name as string;
  return key;
}
