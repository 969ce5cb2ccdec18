import { DatabaseSync } from "node:sqlite";
import { assertEquals } from "../../../test/_assert.ts";
import { nameIndexConformance, namedKeyConformance, oldStoreConformance, storeConformance } from "../../../test/_store_conformance.ts";
import { SqliteKeyStore } from "./sqlite.ts";
import { tempDir } from "../../../test/_temp.ts";

Deno.test("SqliteKeyStore: put/get/delete/list pages/count/metadata, and it persists across opens", async () => {
  const dir = await tempDir();
  try {
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    await storeConformance(store);
    await namedKeyConformance(store);
    await store.close();
    assertEquals(Deno.statSync(`${dir}/keys.db`).mode! & 0o777, 0o600);
    const reopened = SqliteKeyStore.open(`${dir}/keys.db`);
    assertEquals(await reopened.count(), 4);
    await reopened.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SqliteKeyStore: Keyless names are indexed with their keys, and rebuilt for a store from before the index", async () => {
  const dir = await tempDir();
  const path = `${dir}/keys.db`;
  const store = SqliteKeyStore.open(path);
  try {
    await nameIndexConformance(store, {
      forgetNames: () => {
        const db = new DatabaseSync(path);
        db.exec("DROP INDEX keys_by_ski; DROP INDEX keys_by_cert_digest; DROP INDEX keys_unnamed;");
        db.exec("ALTER TABLE keys DROP COLUMN ski; ALTER TABLE keys DROP COLUMN cert_digest;");
        db.close();
        return Promise.resolve();
      },
      reopen: () => Promise.resolve(SqliteKeyStore.open(path)),
    });
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** The schema of keycell's SQLite stores before named keys (450cfc4). */
const SQLITE_SCHEMA_BEFORE_NAMES = `
  CREATE TABLE keys (id TEXT PRIMARY KEY, key_spec TEXT NOT NULL, public_key BLOB NOT NULL, sealed BLOB NOT NULL, ski BLOB, cert_digest BLOB) WITHOUT ROWID;
  CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
  CREATE INDEX keys_by_ski ON keys (ski) WHERE ski IS NOT NULL;
  CREATE INDEX keys_by_cert_digest ON keys (cert_digest) WHERE cert_digest IS NOT NULL;
  CREATE INDEX keys_unnamed ON keys (id) WHERE ski IS NULL;
`;

Deno.test("SqliteKeyStore: a store from before named keys is migrated on open; its keys are names of their own", async () => {
  const dir = await tempDir();
  const path = `${dir}/keys.db`;
  try {
    await oldStoreConformance({
      makeOld: (key) => {
        const db = new DatabaseSync(path);
        db.exec(SQLITE_SCHEMA_BEFORE_NAMES);
        db.prepare("INSERT INTO keys (id, key_spec, public_key, sealed) VALUES (?, ?, ?, ?)").run(key.id, key.keySpec, key.publicKey, key.sealed);
        db.close();
        return Promise.resolve();
      },
      open: () => Promise.resolve(SqliteKeyStore.open(path)),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
