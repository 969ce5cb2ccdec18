/**
 * The default key store: one SQLite file in the data directory, through Deno's `node:sqlite`.
 * Needs no setup; fits one node. The schema and queries are the platform-neutral
 * {@linkcode SqlKeyStore}'s; this file opens the file and adapts `node:sqlite` to it.
 *
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { type SqlDatabase, SqlKeyStore } from "../../core/sql_key_store.ts";

/**
 * A {@linkcode SqlKeyStore} in a SQLite file.
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
export class SqliteKeyStore extends SqlKeyStore {
  private constructor(db: DatabaseSync) {
    super(nodeSqliteDatabase(db), "sqlite");
  }

  /** Opens (creating if needed, mode 0600) the store file, migrating a store made by an older version. */
  static open(path: string): SqliteKeyStore {
    const db = new DatabaseSync(path);
    try {
      Deno.chmodSync(path, 0o600);
      db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;");
      return new SqliteKeyStore(db);
    } catch (err) {
      db.close();
      throw err;
    }
  }
}

/**
 * `node:sqlite` as a {@linkcode SqlDatabase}, each statement prepared once.
 *
 * @example
 * ```ts
 * import { DatabaseSync } from "node:sqlite";
 * import { nodeSqliteDatabase } from "./sqlite.ts";
 *
 * const db = nodeSqliteDatabase(new DatabaseSync(":memory:"));
 * db.run("CREATE TABLE t (n INTEGER)");
 * db.transaction(() => db.run("INSERT INTO t VALUES (?)", 1)); // true
 * db.query("SELECT n FROM t"); // [{ n: 1 }]
 * db.close();
 * ```
 */
export function nodeSqliteDatabase(db: DatabaseSync): SqlDatabase {
  const statements = new Map<string, StatementSync>();
  const prepared = (sql: string) => {
    let statement = statements.get(sql);
    if (statement === undefined) statements.set(sql, statement = db.prepare(sql));
    return statement;
  };
  return {
    query: (sql, ...parameters) => prepared(sql).all(...parameters),
    run: (sql, ...parameters) => Number(prepared(sql).run(...parameters).changes) > 0,
    // BEGIN IMMEDIATE takes the file's write lock at once: another process (the CLI's master key
    // rotation) cannot write between what the transaction reads and what it writes.
    transaction(work) {
      db.exec("BEGIN IMMEDIATE");
      try {
        const result = work();
        db.exec("COMMIT");
        return result;
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
    close: () => db.close(),
  };
}
