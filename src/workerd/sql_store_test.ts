import { DatabaseSync } from "node:sqlite";
import { assertEquals } from "../../test/_assert.ts";
import { nameIndexConformance, namedKeyConformance, oldStoreConformance, storeConformance } from "../../test/_store_conformance.ts";
import { durableObjectKeyStore } from "./sql_store.ts";
import { durableObjectStorage } from "../../test/_durable_object_storage.ts";
import { keylessNames } from "../core/key_names.ts";
import { tempDir } from "../../test/_temp.ts";

function open(path: string) {
  return durableObjectKeyStore(durableObjectStorage(new DatabaseSync(path)));
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
