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
  type KeyPage,
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

/** Keyless names, indexed; and the keys still without them (none, once a store is named). */
const NAME_INDEXES = `
  CREATE INDEX IF NOT EXISTS keys_by_ski ON keys (ski) WHERE ski IS NOT NULL;
  CREATE INDEX IF NOT EXISTS keys_by_cert_digest ON keys (cert_digest) WHERE cert_digest IS NOT NULL;
  CREATE INDEX IF NOT EXISTS keys_unnamed ON keys (id) WHERE ski IS NULL;
`;

type Row = { id: string; key_spec: string; public_key: Uint8Array; sealed?: Uint8Array };

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
    this.#put = db.prepare("INSERT OR IGNORE INTO keys (id, key_spec, public_key, sealed, ski, cert_digest) VALUES (?, ?, ?, ?, ?, ?)");
    this.#get = db.prepare("SELECT id, key_spec, public_key, sealed FROM keys WHERE id = ?");
    this.#delete = db.prepare("DELETE FROM keys WHERE id = ?");
    this.#first = db.prepare("SELECT id, key_spec, public_key FROM keys ORDER BY id LIMIT ?");
    this.#after = db.prepare("SELECT id, key_spec, public_key FROM keys WHERE id > ? ORDER BY id LIMIT ?");
    this.#afterAmong = db.prepare(
      "SELECT id, key_spec, public_key FROM keys WHERE id IN (SELECT value FROM json_each(?)) AND id > ? ORDER BY id LIMIT ?",
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
      db.exec(NAME_INDEXES);
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
    return this.#put.run(key.id, key.keySpec, key.publicKey, key.sealed, names?.ski ?? null, names?.certificateDigest ?? null).changes === 1;
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

function listed(row: Row): { id: string; keySpec: KeySpec; publicKey: Uint8Array } {
  return { id: row.id, keySpec: row.key_spec as KeySpec, publicKey: new Uint8Array(row.public_key) };
}
