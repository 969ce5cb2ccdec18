/**
 * The key store inside a Durable Object: its SQLite storage (`ctx.storage.sql`), holding sealed
 * blobs, public keys and the store's metadata, never a plaintext key. The schema and queries are
 * the platform-neutral {@linkcode SqlKeyStore}'s; this file adapts the storage's calls to it,
 * written against the few it uses, so Deno's `node:sqlite` can stand in for them in tests.
 *
 * @module
 */

import { type SqlDatabase, SqlKeyStore } from "../core/sql_key_store.ts";

/** The part of a Durable Object's `SqlStorage` the store uses. */
export interface SqlStorage {
  exec(query: string, ...bindings: unknown[]): { toArray(): Record<string, unknown>[]; readonly rowsWritten: number };
}

/** The part of a Durable Object's `ctx.storage` the store uses. */
export interface DurableObjectSqlStorage {
  sql: SqlStorage;
  /** Runs `work` in one transaction. */
  transactionSync<T>(work: () => T): T;
}

/**
 * The key store on a Durable Object's storage, its tables created (or brought up to date) first.
 *
 * @example
 * ```ts
 * import { durableObjectKeyStore, type DurableObjectSqlStorage } from "./sql_store.ts";
 * import type { StoredKey } from "../core/key_store.ts";
 *
 * // Inside the Durable Object, whose ctx.storage holds the SQLite database.
 * async function keep(ctx: { storage: DurableObjectSqlStorage }, key: StoredKey): Promise<boolean> {
 *   const store = durableObjectKeyStore(ctx.storage);
 *   return await store.put(key); // false when a key is stored under key.id already
 * }
 * ```
 */
export function durableObjectKeyStore(storage: DurableObjectSqlStorage): SqlKeyStore {
  return new SqlKeyStore(durableObjectDatabase(storage), "durable-object");
}

function durableObjectDatabase(storage: DurableObjectSqlStorage): SqlDatabase {
  return {
    query: (query, ...parameters) => storage.sql.exec(query, ...parameters).toArray(),
    run(query, ...parameters) {
      const cursor = storage.sql.exec(query, ...parameters);
      cursor.toArray(); // runs the statement to completion
      return cursor.rowsWritten > 0;
    },
    transaction: (work) => storage.transactionSync(work),
    // The storage belongs to the Durable Object, which outlives the store.
    close() {},
  };
}
