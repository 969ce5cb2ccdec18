import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals } from "../../test/_assert.ts";
import { namedKeyConformance, storeConformance } from "../../test/_store_conformance.ts";
import { nodeSqliteDatabase } from "../deno/store/sqlite.ts";
import type { KeyStore } from "./key_store.ts";
import { type SqlDatabase, SqlKeyStore } from "./sql_key_store.ts";

/** An in-memory database that notes every statement's text, and whether it was closed. */
function recorded(texts: Set<string>): SqlDatabase & { closed: boolean } {
  const db = nodeSqliteDatabase(new DatabaseSync(":memory:"));
  return {
    closed: false,
    query: (sql, ...parameters) => (texts.add(sql), db.query(sql, ...parameters)),
    run: (sql, ...parameters) => (texts.add(sql), db.run(sql, ...parameters)),
    transaction: (work) => db.transaction(work),
    close() {
      this.closed = true;
      db.close();
    },
  };
}

/** Every call of the store, on values of its own each time. */
async function callEverything(store: KeyStore): Promise<void> {
  const id = crypto.randomUUID().replaceAll("-", "").repeat(2);
  const key = { id, keySpec: "ECC_NIST_P256" as const, publicKey: crypto.getRandomValues(new Uint8Array(9)), sealed: new Uint8Array([id.length]) };
  assertEquals(await store.put(key, crypto.getRandomValues(new Uint8Array(32))), true);
  assertEquals(await store.get(id), key);
  assertEquals(await store.findByKeylessName({ ski: key.publicKey }), undefined);
  assertEquals(await store.findByKeylessName({ certificateDigest: key.publicKey }), undefined);
  assertEquals((await store.list({ limit: 7, cursor: id, ids: new Set([id]) })).keys, [], "nothing after the cursor");
  assertEquals((await store.list({ limit: 7, cursor: id.slice(0, 63) })).keys, [{ id, keySpec: key.keySpec, publicKey: key.publicKey }]);
  assertEquals(await store.setMetaOnce(id, key.sealed), key.sealed);
  assertEquals(await store.replaceMeta(id, key.sealed, key.publicKey), true);
  assertEquals(await store.replaceSealed(id, key.sealed, key.publicKey), true);
  const record = { name: id.slice(3), primary: id, versions: [{ id, version: 1 }], state: "enabled" as const };
  assertEquals(await store.writeName(undefined, record), true);
  assertEquals(await store.getName(record.name), record);
  assertEquals(await store.dueDeletions(Date.now()), []);
  assertEquals(await store.deleteName(record.name, record, [id]), true);
  assertEquals(await store.count(), 0);
}

Deno.test("SqlKeyStore: its SQL is a fixed set of single statements with values bound, never written into the text", async () => {
  const texts = new Set<string>();
  const db = recorded(texts);
  const store = new SqlKeyStore(db, "sqlite");
  await callEverything(store);
  const seen = texts.size;
  // node:sqlite's adapter prepares each text once and keeps it: other values must add none.
  await callEverything(store);
  assertEquals([...texts].slice(seen), []);
  await storeConformance(store);
  await namedKeyConformance(store);
  assertEquals([...texts].slice(seen), []);
  for (const text of texts) assert(!text.includes(";"), `one statement a call (a Durable Object's exec and node:sqlite's prepare take one): ${text}`);
  await store.close();
  assert(db.closed, "close lets the database go");
});
