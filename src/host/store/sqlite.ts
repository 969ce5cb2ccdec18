/**
 * The default key store: one SQLite file in the data directory, through Deno's `node:sqlite`.
 * Needs no setup; fits one node.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { KeySpec } from "../../guest/protocol.ts";
import { keyNames } from "../../keyless/keys.ts";
import { type KeyPage, type KeyStore, pageOf, type StoredKey } from "./store.ts";

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    key_spec TEXT NOT NULL,
    public_key BLOB NOT NULL,
    sealed BLOB NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS key_names (name TEXT PRIMARY KEY, id TEXT NOT NULL) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS key_names_by_id ON key_names (id);
`;

type Row = { id: string; key_spec: string; public_key: Uint8Array; sealed?: Uint8Array };

/**
 * A {@linkcode KeyStore} in a SQLite file.
 *
 * @example
 * ```ts
 * const store = SqliteKeyStore.open(".keycell/keys.db");
 * console.log(await store.count());
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
  readonly #putName: StatementSync;
  readonly #findName: StatementSync;
  readonly #deleteNames: StatementSync;

  private constructor(db: DatabaseSync) {
    this.#db = db;
    this.#put = db.prepare("INSERT OR IGNORE INTO keys (id, key_spec, public_key, sealed) VALUES (?, ?, ?, ?)");
    this.#get = db.prepare("SELECT id, key_spec, public_key, sealed FROM keys WHERE id = ?");
    this.#delete = db.prepare("DELETE FROM keys WHERE id = ?");
    this.#first = db.prepare("SELECT id, key_spec, public_key FROM keys ORDER BY id LIMIT ?");
    this.#after = db.prepare("SELECT id, key_spec, public_key FROM keys WHERE id > ? ORDER BY id LIMIT ?");
    this.#putName = db.prepare("INSERT OR IGNORE INTO key_names (name, id) VALUES (?, ?)");
    this.#findName = db.prepare("SELECT id FROM key_names WHERE name = ?");
    this.#deleteNames = db.prepare("DELETE FROM key_names WHERE id = ?");
  }

  /** Opens (creating if needed, mode 0600) the store file. */
  static open(path: string): SqliteKeyStore {
    const db = new DatabaseSync(path);
    try {
      Deno.chmodSync(path, 0o600);
      db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
      db.exec(SCHEMA);
    } catch (err) {
      db.close();
      throw err;
    }
    const store = new SqliteKeyStore(db);
    store.#indexUnnamed();
    return store;
  }

  put(key: StoredKey): Promise<boolean> {
    return run(() => this.#transaction(() => this.#insert(key)));
  }

  putMany(keys: StoredKey[]): Promise<void> {
    return run(() => this.#transaction(() => keys.forEach((key) => this.#insert(key))));
  }

  findByName(name: string): Promise<string | undefined> {
    return run(() => (this.#findName.get(name) as { id: string } | undefined)?.id);
  }

  #insert(key: StoredKey): boolean {
    if (this.#put.run(key.id, key.keySpec, key.publicKey, key.sealed).changes !== 1) return false;
    for (const name of keyNames(key.publicKey)) this.#putName.run(name, key.id);
    return true;
  }

  /** Names the keys a store written before the name index has (once, when it is opened). */
  #indexUnnamed(): void {
    const unnamed = this.#db.prepare(
      "SELECT id, public_key FROM keys WHERE NOT EXISTS (SELECT 1 FROM key_names WHERE key_names.id = keys.id)",
    ).all() as Row[];
    this.#transaction(() => {
      for (const row of unnamed) for (const name of keyNames(row.public_key)) this.#putName.run(name, row.id);
    });
  }

  #transaction<T>(work: () => T): T {
    this.#db.exec("BEGIN");
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
    return run(() =>
      this.#transaction(() => {
        this.#deleteNames.run(id);
        return this.#delete.run(id).changes === 1;
      })
    );
  }

  list({ limit, cursor }: { limit: number; cursor?: string }): Promise<KeyPage> {
    return run(() => {
      const rows = (cursor === undefined ? this.#first.all(limit + 1) : this.#after.all(cursor, limit + 1)) as Row[];
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

  async setMetaOnce(name: string, value: Uint8Array): Promise<Uint8Array> {
    await run(() => this.#db.prepare("INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)").run(name, value));
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
