import { assertEquals, assertRejects } from "../../../test/_assert.ts";
import postgres from "postgres";
import { Buffer } from "node:buffer";
import { nameIndexConformance, namedKeyConformance, oldStoreConformance, storeConformance } from "../../../test/_store_conformance.ts";
import { PostgresKeyStore } from "./postgres.ts";
import { startTestPostgres } from "../../../test/_postgres_server.ts";

Deno.test("PostgresKeyStore on a real server: the same behaviour as SQLite, shared by two connections", async () => {
  const pg = await startTestPostgres();
  try {
    const store = await PostgresKeyStore.open(pg.url);
    await storeConformance(store);
    await namedKeyConformance(store);
    const other = await PostgresKeyStore.open(pg.url);
    assertEquals(await other.count(), 4, "a second node sees the same keys");
    await other.close();
    await store.close();
  } finally {
    await pg.stop();
  }
});

Deno.test("PostgresKeyStore: a server that is not there rejects (the caller answers 503)", async () => {
  await assertRejects(() => PostgresKeyStore.open("postgres://keycell@127.0.0.1:1/postgres", { connectTimeoutSeconds: 2 }));
});

Deno.test("PostgresKeyStore: Keyless names are indexed with their keys, and rebuilt for a store from before the index", async () => {
  const pg = await startTestPostgres();
  try {
    const store = await PostgresKeyStore.open(pg.url);
    await nameIndexConformance(store, {
      forgetNames: async () => {
        const sql = postgres(pg.url, { onnotice: () => {} });
        await sql`ALTER TABLE keycell_keys DROP COLUMN ski, DROP COLUMN cert_digest`;
        await sql.end();
      },
      reopen: () => PostgresKeyStore.open(pg.url),
    });
    await store.close();
  } finally {
    await pg.stop();
  }
});

Deno.test("PostgresKeyStore: a store from before named keys is migrated on open; its keys are names of their own", async () => {
  const pg = await startTestPostgres();
  try {
    await oldStoreConformance({
      makeOld: async (key) => {
        // The tables of 450cfc4.
        const sql = postgres(pg.url, { onnotice: () => {} });
        await sql`CREATE TABLE keycell_keys (id text PRIMARY KEY, key_spec text NOT NULL, public_key bytea NOT NULL, sealed bytea NOT NULL,
          ski bytea, cert_digest bytea)`;
        await sql`CREATE TABLE keycell_meta (name text PRIMARY KEY, value bytea NOT NULL)`;
        await sql`INSERT INTO keycell_keys (id, key_spec, public_key, sealed) VALUES (${key.id}, ${key.keySpec},
          ${Buffer.from(key.publicKey)}, ${Buffer.from(key.sealed)})`;
        await sql.end();
      },
      open: () => PostgresKeyStore.open(pg.url),
    });
  } finally {
    await pg.stop();
  }
});
