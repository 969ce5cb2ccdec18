import { DatabaseSync } from "node:sqlite";
import { assertEquals } from "../../test/_assert.ts";
import { nameIndexConformance, namedKeyConformance, oldStoreConformance, storeConformance } from "../../test/_store_conformance.ts";
import { type SqlStorage, SqlKeyStore } from "./sql_store.ts";
import { keylessNames } from "../core/key_names.ts";
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
    const store = open(`${dir}/keys.db`);
    await storeConformance(store);
    await namedKeyConformance(store);
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

Deno.test("SqlKeyStore: a Durable Object store from before named keys is migrated; its keys are names of their own", async () => {
  const dir = await tempDir("keycell-durable-");
  const path = `${dir}/keys.db`;
  try {
    await oldStoreConformance({
      makeOld: (key) => {
        // The Durable Object schema of 450cfc4.
        const db = new DatabaseSync(path);
        db.exec(`
          CREATE TABLE keys (id TEXT PRIMARY KEY, key_spec TEXT NOT NULL, public_key BLOB NOT NULL, sealed BLOB NOT NULL, ski BLOB, cert_digest BLOB) WITHOUT ROWID;
          CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
          CREATE INDEX keys_by_ski ON keys (ski) WHERE ski IS NOT NULL;
          CREATE INDEX keys_by_cert_digest ON keys (cert_digest) WHERE cert_digest IS NOT NULL;
        `);
        const names = keylessNames(key.publicKey)!;
        db.prepare("INSERT INTO keys (id, key_spec, public_key, sealed, ski) VALUES (?, ?, ?, ?, ?)").run(key.id, key.keySpec, key.publicKey, key.sealed, names.ski);
        db.close();
        return Promise.resolve();
      },
      open: () => Promise.resolve(open(path)),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
