import { DatabaseSync } from "node:sqlite";
import { assertEquals } from "../../../test/_assert.ts";
import { nameIndexConformance, storeConformance } from "../../../test/_store_conformance.ts";
import { SqliteKeyStore } from "./sqlite.ts";
import { tempDir } from "../../../test/_temp.ts";

Deno.test("SqliteKeyStore: put/get/delete/list pages/count/metadata, and it persists across opens", async () => {
  const dir = await tempDir();
  try {
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    await storeConformance(store);
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
