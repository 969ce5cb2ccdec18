/**
 * Deno's `node:sqlite` standing in for a Durable Object's storage in tests.
 *
 * @module
 */

import type { DatabaseSync } from "node:sqlite";
import type { SqlParameter } from "../src/core/sql_key_store.ts";
import { nodeSqliteDatabase } from "../src/deno/store/sqlite.ts";
import type { DurableObjectSqlStorage } from "../src/workerd/sql_store.ts";

/**
 * `db` shaped like a Durable Object's `ctx.storage`: `sql.exec` (a cursor with its rows and
 * `rowsWritten`) and `transactionSync`.
 *
 * @example
 * ```ts
 * import { DatabaseSync } from "node:sqlite";
 * import { durableObjectKeyStore } from "../src/workerd/sql_store.ts";
 * import { durableObjectStorage } from "./_durable_object_storage.ts";
 *
 * const store = durableObjectKeyStore(durableObjectStorage(new DatabaseSync(":memory:")));
 * await store.count(); // 0
 * ```
 */
export function durableObjectStorage(db: DatabaseSync): DurableObjectSqlStorage {
  const database = nodeSqliteDatabase(db);
  return {
    sql: {
      exec(query, ...bindings) {
        const parameters = bindings as SqlParameter[];
        if (/^\s*SELECT/i.test(query)) return { toArray: () => database.query(query, ...parameters), rowsWritten: 0 };
        const rowsWritten = database.run(query, ...parameters) ? 1 : 0;
        return { toArray: () => [], rowsWritten };
      },
    },
    transactionSync: (work) => database.transaction(work),
  };
}
