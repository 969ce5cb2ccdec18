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
  /**
   * `delete`, the rollback journal; `wal` only while another process (an older keycell) still
   * holds a store it made in WAL mode open, until a start that finds it alone.
   */
  readonly journalMode: string;

  private constructor(db: DatabaseSync, journalMode: string) {
    super(nodeSqliteDatabase(db), "sqlite");
    this.journalMode = journalMode;
  }

  /** Opens (creating if needed, mode 0600) the store file, migrating a store made by an older version. */
  static open(path: string): SqliteKeyStore {
    const db = new DatabaseSync(path);
    try {
      Deno.chmodSync(path, 0o600);
      db.exec("PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL;");
      return new SqliteKeyStore(db, rollbackJournal(db));
    } catch (err) {
      db.close();
      throw err;
    }
  }
}

/**
 * Puts the database in rollback-journal mode and returns the mode it is in. Not WAL: WAL's index
 * (`keys.db-shm`) is a shared memory map, and a write to it that the file system refuses (full,
 * read-only, immutable) is a SIGBUS that ends the whole process. A rollback journal reaches the
 * disk only through write(2), whose refusals are errors that fail one call.
 */
function rollbackJournal(db: DatabaseSync): string {
  try {
    return String((db.prepare("PRAGMA journal_mode = DELETE").get() as { journal_mode: string }).journal_mode);
  } catch (err) {
    // Leaving WAL needs the file to itself; another process holding it open keeps it in WAL.
    if (!/locked|busy/i.test((err as Error).message)) throw err;
    return String((db.prepare("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode);
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
        // A failed COMMIT (a full disk, say) may have rolled back already; the first error is the one to report.
        if (db.isTransaction) db.exec("ROLLBACK");
        throw err;
      }
    },
    close: () => db.close(),
  };
}
