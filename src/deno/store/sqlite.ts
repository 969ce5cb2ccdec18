/**
 * The default key store: one SQLite file in the data directory, through Deno's `node:sqlite`.
 * Needs no setup; fits one node.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { KeySpec } from "../../core/protocol.ts";
import { type KeylessNames, keylessNames } from "../../core/key_names.ts";
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
} from "../../core/key_store.ts";

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
`;

/** Named keys (added to stores made before them on open): each key's name, and each name's record. */
const NAMES = `
  CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, record BLOB NOT NULL, deletion_due INTEGER) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS names_by_deletion ON names (deletion_due) WHERE deletion_due IS NOT NULL;
`;

/** Keyless names, indexed; and the keys still without them (none, once a store is named). */
const NAME_INDEXES = `
  CREATE INDEX IF NOT EXISTS keys_by_ski ON keys (ski) WHERE ski IS NOT NULL;
  CREATE INDEX IF NOT EXISTS keys_by_cert_digest ON keys (cert_digest) WHERE cert_digest IS NOT NULL;
  CREATE INDEX IF NOT EXISTS keys_unnamed ON keys (id) WHERE ski IS NULL;
`;

type Row = { id: string; key_spec: string; public_key: Uint8Array; sealed?: Uint8Array; name?: string | null };

/**
 * A {@linkcode KeyStore} in a SQLite file.
 *
 * @example
 * ```ts
 * import { SqliteKeyStore } from "./sqlite.ts";
 *
 * const dir = await Deno.makeTempDir();
 * try {
 *   const store = SqliteKeyStore.open(`${dir}/keys.db`); // keycell's is `<dataDir>/keys.db`
 *   await store.count(); // 0
 *   await store.close();
 * } finally {
 *   await Deno.remove(dir, { recursive: true });
 * }
 * ```
 */
export class SqliteKeyStore implements KeyStore {
  readonly kind = "sqlite";
  readonly #db: DatabaseSync;
  readonly #put: StatementSync;
  readonly #get: StatementSync;
  readonly #delete: StatementSync;
  readonly #first: StatementSync;
  readonly #after: StatementSync;
  readonly #afterAmong: StatementSync;
  readonly #bySki: StatementSync;
  readonly #byCertDigest: StatementSync;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#put = db.prepare(
      "INSERT OR IGNORE INTO keys (id, key_spec, public_key, sealed, ski, cert_digest, name) VALUES (?, ?, ?, ?, ?, ?, ?)",
    );
    this.#get = db.prepare("SELECT id, key_spec, public_key, sealed, name FROM keys WHERE id = ?");
    this.#delete = db.prepare("DELETE FROM keys WHERE id = ?");
    this.#first = db.prepare("SELECT id, key_spec, public_key, name FROM keys ORDER BY id LIMIT ?");
    this.#after = db.prepare("SELECT id, key_spec, public_key, name FROM keys WHERE id > ? ORDER BY id LIMIT ?");
    this.#afterAmong = db.prepare(
      "SELECT id, key_spec, public_key, name FROM keys WHERE id IN (SELECT value FROM json_each(?)) AND id > ? ORDER BY id LIMIT ?",
    );
    this.#bySki = db.prepare("SELECT id FROM keys WHERE ski = ?");
    this.#byCertDigest = db.prepare("SELECT id FROM keys WHERE cert_digest = ?");
  }

  /** Opens (creating if needed, mode 0600) the store file. */
  static open(path: string): SqliteKeyStore {
    const db = new DatabaseSync(path);
    try {
      Deno.chmodSync(path, 0o600);
      db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
      db.exec(SCHEMA);
      // Stores from before the Keyless names: add the columns, then name every key once.
      const columns = (db.prepare("PRAGMA table_info(keys)").all() as { name: string }[]).map((c) => c.name);
      if (!columns.includes("ski")) db.exec("ALTER TABLE keys ADD COLUMN ski BLOB; ALTER TABLE keys ADD COLUMN cert_digest BLOB;");
      // Stores from before named keys: every key they hold is a name of its own (name NULL).
      if (!columns.includes("name")) db.exec("ALTER TABLE keys ADD COLUMN name TEXT;");
      db.exec(NAME_INDEXES);
      db.exec(NAMES);
    } catch (err) {
      db.close();
      throw err;
    }
    const store = new SqliteKeyStore(db);
    store.#indexUnnamed();
    return store;
  }

  put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    if (sealedUnder === undefined) return run(() => this.#insert(key));
    return run(() => this.#transaction(() => (this.#fence(sealedUnder), this.#insert(key))));
  }

  putMany(keys: StoredKey[]): Promise<void> {
    return run(() => this.#transaction(() => keys.forEach((key) => this.#insert(key))));
  }

  findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined> {
    return run(() => {
      const row = by.ski ? this.#bySki.get(by.ski) : by.certificateDigest ? this.#byCertDigest.get(by.certificateDigest) : undefined;
      return (row as { id: string } | undefined)?.id;
    });
  }

  #insert(key: StoredKey): boolean {
    const names = keylessNames(key.publicKey);
    return this.#put.run(
      key.id,
      key.keySpec,
      key.publicKey,
      key.sealed,
      names?.ski ?? null,
      names?.certificateDigest ?? null,
      key.name ?? null,
    ).changes === 1;
  }

  /** Names the keys a store written before the Keyless names holds (once, when it is opened), 10,000 at a time. */
  #indexUnnamed(): void {
    const unnamed = this.#db.prepare("SELECT id, public_key FROM keys WHERE ski IS NULL AND id > ? ORDER BY id LIMIT 10000");
    const name = this.#db.prepare("UPDATE keys SET ski = ?, cert_digest = ? WHERE id = ?");
    for (let rows = unnamed.all("") as Row[]; rows.length > 0; rows = unnamed.all(rows.at(-1)!.id) as Row[]) {
      this.#transaction(() => {
        for (const row of rows) {
          const names = keylessNames(row.public_key);
          if (names !== undefined) name.run(names.ski, names.certificateDigest ?? null, row.id);
        }
      });
    }
  }

  /** Throws unless the store's master key id admits a blob sealed under `sealedUnder`; call inside a transaction. */
  #fence(sealedUnder: Uint8Array): void {
    const row = this.#db.prepare("SELECT value FROM meta WHERE name = ?").get(META.MASTER_KEY_ID) as { value: Uint8Array } | undefined;
    if (!admitsSealedUnder(row && new Uint8Array(row.value), sealedUnder)) throw new SealedUnderOtherKey();
  }

  /** Runs `work` holding the database's write lock from the start (BEGIN IMMEDIATE), so what it reads stays true until it commits. */
  #transaction<T>(work: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = work();
      this.#db.exec("COMMIT");
      return result;
    } catch (err) {
      this.#db.exec("ROLLBACK");
      throw err;
    }
  }

  get(id: string): Promise<StoredKey | undefined> {
    return run(() => {
      const row = this.#get.get(id) as Row | undefined;
      return row && { ...listed(row), sealed: new Uint8Array(row.sealed!) };
    });
  }

  delete(id: string): Promise<boolean> {
    return run(() => this.#delete.run(id).changes === 1);
  }

  list({ limit, cursor, ids }: ListOptions): Promise<KeyPage> {
    return run(() => {
      const rows = (ids !== undefined
        ? this.#afterAmong.all(JSON.stringify([...ids]), cursor ?? "", limit + 1)
        : cursor === undefined
        ? this.#first.all(limit + 1)
        : this.#after.all(cursor, limit + 1)) as Row[];
      return pageOf(rows.map(listed), limit);
    });
  }

  count(): Promise<number> {
    return run(() => Number((this.#db.prepare("SELECT count(*) AS n FROM keys").get() as { n: number }).n));
  }

  getMeta(name: string): Promise<Uint8Array | undefined> {
    return run(() => {
      const row = this.#db.prepare("SELECT value FROM meta WHERE name = ?").get(name) as { value: Uint8Array } | undefined;
      return row && new Uint8Array(row.value);
    });
  }

  async setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array> {
    const insert = () => this.#db.prepare("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)").run(name, value);
    await run(() => sealedUnder === undefined ? insert() : this.#transaction(() => (this.#fence(sealedUnder), insert())));
    return (await this.getMeta(name))!;
  }

  replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return run(() => Number(this.#db.prepare("UPDATE keys SET sealed = ? WHERE id = ? AND sealed = ?").run(to, id, from).changes) === 1);
  }

  replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return run(() => Number(this.#db.prepare("UPDATE meta SET value = ? WHERE name = ? AND value = ?").run(to, name, from).changes) === 1);
  }

  getName(name: string): Promise<KeyNameRecord | undefined> {
    return run(() => this.#record(name));
  }

  #record(name: string): KeyNameRecord | undefined {
    const row = this.#db.prepare("SELECT record FROM names WHERE name = ?").get(name) as { record: Uint8Array } | undefined;
    return row && decodeKeyName(new Uint8Array(row.record));
  }

  writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return run(() =>
      this.#transaction(() => {
        if (sealedUnder !== undefined) this.#fence(sealedUnder);
        if (!sameRecord(this.#record(to.name), from)) return false;
        if (key !== undefined && !this.#insert(versionOf(key, to.name))) return false;
        this.#db.prepare("INSERT OR REPLACE INTO names (name, record, deletion_due) VALUES (?, ?, ?)")
          .run(to.name, encodeKeyName(to), to.state === "pending_deletion" ? to.deletionDate ?? 0 : null);
        return true;
      })
    );
  }

  deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean> {
    return run(() =>
      this.#transaction(() => {
        if (!sameRecord(this.#record(name), from)) return false;
        this.#db.prepare("DELETE FROM names WHERE name = ?").run(name);
        for (const id of ids) this.#delete.run(id);
        return true;
      })
    );
  }

  dueDeletions(now: number): Promise<string[]> {
    return run(() =>
      (this.#db.prepare("SELECT name FROM names WHERE deletion_due <= ? ORDER BY name").all(now) as { name: string }[]).map((r) => r.name)
    );
  }

  close(): Promise<void> {
    return run(() => this.#db.close());
  }
}

/** node:sqlite is synchronous; this keeps the interface's promise of rejecting rather than throwing. */
function run<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (err) {
    return Promise.reject(err);
  }
}

function listed(row: Row): ListedKey {
  const key: ListedKey = { id: row.id, keySpec: row.key_spec as KeySpec, publicKey: new Uint8Array(row.public_key) };
  if (row.name) key.name = row.name;
  return key;
}
