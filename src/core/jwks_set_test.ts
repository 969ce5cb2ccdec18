import { assertEquals, assertRejects } from "../../test/_assert.ts";
import { tempDir } from "../../test/_temp.ts";
import { SqliteKeyStore } from "../deno/store/sqlite.ts";
import { KeycellError } from "./errors.ts";
import { decodeJwksSet, encodeJwksSet, jwksKeyIds, markJwks, MAX_JWKS_KEYS } from "./jwks_set.ts";
import { type KeyStore, META } from "./key_store.ts";

const id = (n: number) => n.toString(16).padStart(64, "0");

Deno.test("the set's bytes: a format byte, then the ids sorted and each once; other bytes are refused", () => {
  const bytes = encodeJwksSet([id(3), id(1), id(3)]);
  assertEquals(bytes.length, 1 + 2 * 32);
  assertEquals(bytes[0], 1);
  assertEquals(decodeJwksSet(bytes), [id(1), id(3)]);
  assertEquals(decodeJwksSet(encodeJwksSet([])), []);
  for (const bad of [new Uint8Array(), Uint8Array.of(2), new Uint8Array(34).fill(1)]) {
    try {
      decodeJwksSet(bad);
      throw new Error(`accepted ${bad.length} bytes`);
    } catch (err) {
      assertEquals((err as KeycellError).code, "internal");
    }
  }
});

Deno.test("markJwks: writers racing on one SQLite store all get their change in", async () => {
  const dir = await tempDir("keycell-jwks-set-");
  const store = SqliteKeyStore.open(`${dir}/keys.db`);
  try {
    assertEquals(await jwksKeyIds(store), []);
    const ids = Array.from({ length: 24 }, (_, i) => id(i + 1));
    assertEquals(await Promise.all(ids.map((i) => markJwks(store, i, true))), ids.map(() => true));
    assertEquals(await jwksKeyIds(store), ids);
    assertEquals(await markJwks(store, ids[0], true), false, "already in");
    const out = ids.filter((_, i) => i % 2 === 0);
    await Promise.all([...out.map((i) => markJwks(store, i, false)), markJwks(store, id(99), true)]);
    assertEquals(await jwksKeyIds(store), [...ids.filter((i) => !out.includes(i)), id(99)]);
    assertEquals(await markJwks(store, id(500), false), false, "taking out an id not in the set changes nothing");
  } finally {
    await store.close();
  }
});

/** A store whose metadata another writer changes once between each read and write. */
function contendedStore(): { store: KeyStore; values: Map<string, Uint8Array> } {
  const values = new Map<string, Uint8Array>();
  let interfere = true;
  const other = encodeJwksSet([id(7)]);
  const store = {
    getMeta: (name: string) => Promise.resolve(values.get(name)),
    setMetaOnce(name: string, value: Uint8Array) {
      if (interfere) {
        interfere = false;
        values.set(name, other);
      }
      if (!values.has(name)) values.set(name, value);
      return Promise.resolve(values.get(name)!);
    },
    replaceMeta(name: string, from: Uint8Array, to: Uint8Array) {
      const now = values.get(name);
      if (now === undefined || now.toHex() !== from.toHex()) return Promise.resolve(false);
      values.set(name, to);
      return Promise.resolve(true);
    },
  } as unknown as KeyStore;
  return { store, values };
}

Deno.test("markJwks: a set created by another writer first is read again and added to, not overwritten", async () => {
  const { store, values } = contendedStore();
  assertEquals(await markJwks(store, id(1), true), true);
  assertEquals(decodeJwksSet(values.get(META.JWKS)!), [id(1), id(7)]);
});

Deno.test(`markJwks: a set of ${MAX_JWKS_KEYS} keys takes no more, but its keys can still be marked and taken out`, async () => {
  const { store } = contendedStore();
  await markJwks(store, id(7), true);
  for (let i = 1; i < MAX_JWKS_KEYS; i++) await markJwks(store, id(1000 + i), true);
  assertEquals((await jwksKeyIds(store)).length, MAX_JWKS_KEYS);
  await assertRejects(markJwks(store, id(5), true), (err) => err instanceof KeycellError && err.code === "bad_request");
  assertEquals(await markJwks(store, id(7), true), false);
  assertEquals(await markJwks(store, id(7), false), true);
  assertEquals(await markJwks(store, id(5), true), true);
});
