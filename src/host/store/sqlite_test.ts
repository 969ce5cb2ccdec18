import { assertEquals } from "../../../test/_assert.ts";
import { storeConformance } from "./_conformance.ts";
import { SqliteKeyStore } from "./sqlite.ts";

Deno.test("SqliteKeyStore: put/get/delete/list pages/count/metadata, and it persists across opens", async () => {
  const dir = await Deno.makeTempDir();
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
