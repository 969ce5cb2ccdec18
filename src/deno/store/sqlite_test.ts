import { DatabaseSync } from "node:sqlite";
import { assertEquals, assertThrows } from "../../../test/_assert.ts";
import { nameIndexConformance, namedKeyConformance, oldStoreConformance, storeConformance } from "../../../test/_store_conformance.ts";
import { nodeSqliteDatabase, SqliteKeyStore } from "./sqlite.ts";
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

Deno.test("SqliteKeyStore: no file of the store is memory-mapped (a refused write is an error, not a SIGBUS); a WAL store is converted", async () => {
  const dir = await tempDir();
  const path = `${dir}/keys.db`;
  try {
    const old = new DatabaseSync(path);
    old.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);");
    // Held open in WAL mode by another connection, the store opens and says so.
    const held = SqliteKeyStore.open(path);
    assertEquals(held.journalMode, "wal");
    assertEquals(await held.count(), 0);
    // The positive control: in WAL mode the scan below finds keys.db-shm mapped.
    assertEquals(mappedUnder(dir), [`${path}-shm`]);
    await held.close();
    old.close();

    const store = SqliteKeyStore.open(path);
    assertEquals(store.journalMode, "delete");
    await storeConformance(store);
    assertEquals(mappedUnder(dir), []);
    assertEquals([...Deno.readDirSync(dir)].map((entry) => entry.name).sort(), ["keys.db"]);
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nodeSqliteDatabase: a transaction SQLite has already rolled back fails with its own error", () => {
  const raw = new DatabaseSync(":memory:");
  const db = nodeSqliteDatabase(raw);
  db.run("CREATE TABLE t (n INTEGER)");
  assertThrows(
    () =>
      db.transaction(() => {
        db.run("INSERT INTO t VALUES (1)");
        raw.exec("ROLLBACK"); // as SQLite does itself when a COMMIT finds the disk full
        throw new Error("database or disk is full");
      }),
    { message: "database or disk is full" },
  );
  assertEquals(raw.isTransaction, false);
  assertEquals(db.transaction(() => db.run("INSERT INTO t VALUES (2)")), true);
  assertEquals(db.query("SELECT n FROM t").map((row) => row.n), [2]);
  db.close();
});

/** The files under `dir` this process has memory-mapped. */
function mappedUnder(dir: string): string[] {
  const lines = Deno.readTextFileSync("/proc/self/maps").split("\n").filter((line) => line.includes(dir));
  return [...new Set(lines.map((line) => line.slice(line.indexOf(dir))))];
}
