import { DatabaseSync } from "node:sqlite";
import { assertEquals } from "../../test/_assert.ts";
import { nameIndexConformance, storeConformance } from "../../test/_store_conformance.ts";
import { type SqlStorage, SqlKeyStore } from "./sql_store.ts";
import { tempDir } from "../../test/_temp.ts";

/** node:sqlite shaped like a Durable Object's `ctx.storage.sql`, and its `transactionSync`. */
function durableObjectStorage(db: DatabaseSync): { sql: SqlStorage; transactionSync<T>(work: () => T): T } {
  return {
    sql: {
      exec(query, ...bindings) {
        if (bindings.length === 0 && query.trim().split(";").filter((s) => s.trim()).length > 1) {
          db.exec(query);
          return { toArray: () => [], rowsWritten: 0 };
        }
        const statement = db.prepare(query);
        if (/^\s*SELECT/i.test(query)) return { toArray: () => statement.all(...bindings as never[]) as Record<string, unknown>[], rowsWritten: 0 };
        const { changes } = statement.run(...bindings as never[]);
        return { toArray: () => [], rowsWritten: Number(changes) };
      },
    },
    transactionSync(work) {
      db.exec("BEGIN");
      try {
        const result = work();
        db.exec("COMMIT");
        return result;
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
  };
}

function open(path: string): SqlKeyStore {
  const storage = durableObjectStorage(new DatabaseSync(path));
  return new SqlKeyStore(storage.sql, (work) => storage.transactionSync(work));
}

Deno.test("SqlKeyStore: put/get/delete/list pages/count/metadata, and it persists across opens", async () => {
  const dir = await tempDir("keycell-durable-");
  try {
    await storeConformance(open(`${dir}/keys.db`));
    assertEquals(await open(`${dir}/keys.db`).count(), 4);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SqlKeyStore: Keyless names are indexed with their keys", async () => {
  const dir = await tempDir("keycell-durable-");
  try {
    const path = `${dir}/keys.db`;
    // A Durable Object store has had the name columns from its first version: nothing to forget.
    await nameIndexConformance(open(path), { forgetNames: () => Promise.resolve(), reopen: () => Promise.resolve(open(path)) });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
