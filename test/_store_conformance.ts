/**
 * What every {@linkcode KeyStore} must do, run against each backend by its own test file.
 *
 * @module
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import { jwksKeyIds, markJwks } from "../src/core/jwks_set.ts";
import { keylessNames } from "../src/core/key_names.ts";
import { type KeyNameRecord, type KeyStore, META, SealedUnderOtherKey, type StoredKey } from "../src/core/key_store.ts";

function key(i: number): StoredKey {
  const id = i.toString(16).padStart(64, "0");
  return { id, keySpec: i % 2 ? "ECC_NIST_P256" : "RSA_2048", publicKey: new Uint8Array([0x30, i]), sealed: new Uint8Array([1, 2, 3, i]) };
}

/**
 * Exercises put/get/delete/list/count and metadata (the JWKS set's compare-and-set included) on
 * an empty store.
 *
 * @example
 * ```ts
 * import { SqliteKeyStore } from "../src/deno/store/sqlite.ts";
 * import { storeConformance } from "./_store_conformance.ts";
 *
 * Deno.test("sqlite", () => storeConformance(SqliteKeyStore.open(`${Deno.makeTempDirSync()}/keys.db`)));
 * ```
 */
export async function storeConformance(store: KeyStore): Promise<void> {
  assertEquals(await store.count(), 0);
  assertEquals(await store.get(key(1).id), undefined);
  assertEquals(await store.put(key(1)), true);
  assertEquals(await store.put({ ...key(1), sealed: new Uint8Array([9]) }), false, "an existing key is kept");
  assertEquals(await store.get(key(1).id), key(1));
  await store.putMany([key(2), key(3), key(1), key(4), key(5)]);
  assertEquals(await store.count(), 5);

  const seen: string[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 10; pages++) {
    const page = await store.list({ limit: 2, cursor });
    assert(page.keys.length <= 2);
    for (const k of page.keys) {
      assertEquals(k, { id: k.id, keySpec: k.keySpec, publicKey: k.publicKey });
      assert(!("sealed" in k), "listing carries no blobs");
      seen.push(k.id);
    }
    cursor = page.nextCursor;
    if (cursor === undefined) break;
  }
  assertEquals(seen, [1, 2, 3, 4, 5].map((i) => key(i).id), "every key once, in id order");

  const among = new Set([key(4).id, key(2).id, key(9).id]);
  const first = await store.list({ limit: 1, ids: among });
  assertEquals([first.keys.map((k) => k.id), first.nextCursor], [[key(2).id], key(2).id], "only listed ids, a cursor from the page");
  const second = await store.list({ limit: 1, ids: among, cursor: first.nextCursor });
  assertEquals([second.keys.map((k) => k.id), second.nextCursor], [[key(4).id], undefined], "no cursor past the last listed id");
  assertEquals(await store.list({ limit: 10, ids: new Set() }), { keys: [] }, "an empty set lists nothing");

  assertEquals(await store.delete(key(3).id), true);
  assertEquals(await store.delete(key(3).id), false);
  assertEquals(await store.get(key(3).id), undefined);
  assertEquals(await store.count(), 4);

  assertEquals(await store.getMeta(META.MASTER_KEY_ID), undefined);
  assertEquals(await store.setMetaOnce(META.MASTER_KEY_ID, new Uint8Array([7, 7])), new Uint8Array([7, 7]));
  assertEquals(await store.setMetaOnce(META.MASTER_KEY_ID, new Uint8Array([8])), new Uint8Array([7, 7]), "set once");
  assertEquals(await store.getMeta(META.MASTER_KEY_ID), new Uint8Array([7, 7]));
  assertEquals(await store.replaceMeta(META.MASTER_KEY_ID, new Uint8Array([8]), new Uint8Array([9])), false, "only from the value it holds");
  assertEquals(await store.replaceMeta(META.MASTER_KEY_ID, new Uint8Array([7, 7]), new Uint8Array([9])), true);
  assertEquals(await store.getMeta(META.MASTER_KEY_ID), new Uint8Array([9]));
  assertEquals(await store.replaceMeta("absent", new Uint8Array([7, 7]), new Uint8Array([9])), false);

  const stored = await store.get(key(2).id);
  assertEquals(await store.replaceSealed(key(2).id, new Uint8Array([0]), new Uint8Array([5])), false, "only from the blob it holds");
  assertEquals(await store.replaceSealed(key(2).id, stored!.sealed, new Uint8Array([5, 5])), true);
  assertEquals(await store.get(key(2).id), { ...key(2), sealed: new Uint8Array([5, 5]) });
  assertEquals(await store.replaceSealed(key(3).id, key(3).sealed, new Uint8Array([5])), false, "a deleted key stays deleted");
  assertEquals(await store.count(), 4);

  // Fencing (master key rotation beside live nodes): a blob comes in only under the recorded master key.
  const [mine, other, fence] = [new Uint8Array([9]), new Uint8Array([8]), new Uint8Array([9, 10])];
  await assertRejects(() => store.put(key(6), other), SealedUnderOtherKey);
  assertEquals(await store.get(key(6).id), undefined, "nothing stored");
  assertEquals(await store.put(key(6), mine), true);
  assertEquals(await store.put(key(6), mine), false, "an existing key is kept");
  assertEquals(await store.replaceMeta(META.MASTER_KEY_ID, mine, fence), true, "a rotation fences the store");
  await assertRejects(() => store.put(key(7), mine), SealedUnderOtherKey);
  await assertRejects(() => store.setMetaOnce(META.WRAPPING_KEY, new Uint8Array([1]), mine), SealedUnderOtherKey);
  assertEquals([await store.get(key(7).id), await store.getMeta(META.WRAPPING_KEY)], [undefined, undefined]);
  assertEquals(await store.put(key(7)), true, "unfenced puts (key files, tools) are not checked");
  assertEquals(await store.replaceMeta(META.MASTER_KEY_ID, fence, mine), true);
  assertEquals(await store.setMetaOnce(META.WRAPPING_KEY, new Uint8Array([1]), mine), new Uint8Array([1]));
  assertEquals([await store.delete(key(6).id), await store.delete(key(7).id)], [true, true]);
  assertEquals(await store.count(), 4);

  // The JWKS set's compare-and-set on one metadata entry: writers racing on it all get their change in.
  const published = Array.from({ length: 12 }, (_, i) => key(20 + i).id);
  assertEquals(await Promise.all(published.map((id) => markJwks(store, id, true))), published.map(() => true));
  assertEquals(await jwksKeyIds(store), published);
  await Promise.all(published.slice(0, 6).map((id) => markJwks(store, id, false)));
  assertEquals(await jwksKeyIds(store), published.slice(6));
}

/** A real key's store record, so that it has Keyless names. */
async function namedKey(algorithm: EcKeyGenParams | RsaHashedKeyGenParams, keySpec: StoredKey["keySpec"]): Promise<StoredKey> {
  const pair = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const id = new Uint8Array(await crypto.subtle.digest("SHA-256", publicKey)).toHex();
  return { id, keySpec, publicKey, sealed: new Uint8Array([1, 2, 3]) };
}

/**
 * The Keyless names lookups use: stored with their key (put and putMany), gone with it, and given
 * to every key of a store from before them when it is opened.
 *
 * @param forgetNames turns the backend's store into one from before the names (no name columns).
 * @param reopen opens the same store anew.
 *
 * @example
 * ```ts
 * import type { KeyStore } from "../src/core/key_store.ts";
 * import { SqliteKeyStore } from "../src/deno/store/sqlite.ts";
 * import { nameIndexConformance } from "./_store_conformance.ts";
 *
 * declare const path: string;
 * declare const store: KeyStore;
 * declare function forgetNames(): Promise<void>;
 * await nameIndexConformance(store, { forgetNames, reopen: () => Promise.resolve(SqliteKeyStore.open(path)) });
 * ```
 */
export async function nameIndexConformance(
  store: KeyStore,
  backend: { forgetNames(): Promise<void>; reopen(): Promise<KeyStore> },
): Promise<void> {
  const ec = await namedKey({ name: "ECDSA", namedCurve: "P-256" }, "ECC_NIST_P256");
  const rsa = await namedKey({ name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, "RSA_2048");
  const ecNames = keylessNames(ec.publicKey)!;
  const rsaNames = keylessNames(rsa.publicKey)!;
  assert(rsaNames.certificateDigest !== undefined, "an RSA key has a certificate digest too");
  const found = (s: KeyStore) =>
    Promise.all([
      s.findByKeylessName({ ski: ecNames.ski }),
      s.findByKeylessName({ ski: rsaNames.ski }),
      s.findByKeylessName({ certificateDigest: rsaNames.certificateDigest }),
    ]);
  assertEquals(await store.findByKeylessName({ ski: ecNames.ski }), undefined);
  await store.put(ec);
  await store.putMany([rsa, ec]);
  assertEquals(await found(store), [ec.id, rsa.id, rsa.id]);
  assertEquals(await store.findByKeylessName({ ski: new Uint8Array(20) }), undefined);

  await backend.forgetNames();
  const reopened = await backend.reopen();
  assertEquals(await found(reopened), [ec.id, rsa.id, rsa.id], "named on open");
  assertEquals(await reopened.get(ec.id), ec, "the rest of the key as it was");

  assertEquals(await reopened.delete(rsa.id), true);
  assertEquals((await found(reopened)).slice(1), [undefined, undefined], "gone with the key");
  await reopened.close();
}

/**
 * Named keys: a name's record changes only from the record it holds (compare-and-set), a new
 * version is stored in the same transaction as the record naming it (or not at all), and a name
 * goes with all its versions. Leaves the store as it found it.
 *
 * @example
 * ```ts
 * import { SqliteKeyStore } from "../src/deno/store/sqlite.ts";
 * import { namedKeyConformance } from "./_store_conformance.ts";
 *
 * Deno.test("sqlite names", () => namedKeyConformance(SqliteKeyStore.open(`${Deno.makeTempDirSync()}/keys.db`)));
 * ```
 */
export async function namedKeyConformance(store: KeyStore): Promise<void> {
  const before = await store.count();
  const [a, b, c, d] = [key(101), key(102), key(103), key(104)];
  const v1: KeyNameRecord = {
    name: "web",
    primary: a.id,
    versions: [{ id: a.id, version: 1, created: 1000 }],
    state: "enabled",
    created: 1000,
    description: "the web key",
    labels: { team: "edge", env: "prod" },
  };
  assertEquals(await store.getName("web"), undefined);
  assertEquals(await store.writeName(undefined, v1, a), true);
  assertEquals(await store.getName("web"), v1);
  assertEquals(await store.get(a.id), { ...a, name: "web" }, "a version knows its name");
  assertEquals(await store.writeName(undefined, { ...v1, primary: b.id }, b), false, "a name is made once");
  assertEquals(await store.get(b.id), undefined, "a refused write stores no key");

  const v2: KeyNameRecord = { ...v1, primary: b.id, versions: [...v1.versions, { id: b.id, version: 2, created: 2000 }] };
  assertEquals(await store.writeName(v1, v2, b), true, "a rotation");
  const stale: KeyNameRecord = { ...v1, primary: c.id, versions: [...v1.versions, { id: c.id, version: 2, created: 3000 }] };
  assertEquals(await store.writeName(v1, stale, c), false, "a rotation from a record that changed meanwhile");
  assertEquals([await store.getName("web"), await store.get(c.id)], [v2, undefined], "the primary stays, no key is added");
  assertEquals(await store.writeName(v2, { ...v2, primary: a.id }, a), false, "a key already stored is not a new version");
  assertEquals(await store.getName("web"), v2);
  assertEquals([(await store.get(a.id))?.name, (await store.get(b.id))?.name], ["web", "web"], "no version is lost");
  const listed = await store.list({ limit: 10, ids: new Set([a.id, b.id]) });
  assertEquals(listed.keys.map((k) => k.name), ["web", "web"], "listing names the versions");

  const disabled: KeyNameRecord = { ...v2, state: "disabled" };
  assertEquals(await store.writeName(v2, disabled), true, "a state change alone");
  const pending: KeyNameRecord = { ...disabled, state: "pending_deletion", deletionDate: 5000 };
  assertEquals(await store.writeName(disabled, pending), true);
  assertEquals([await store.dueDeletions(4999), await store.dueDeletions(5000)], [[], ["web"]], "due on its date");
  assertEquals(await store.deleteName("web", v2, [a.id, b.id]), false, "only the record it was shown");
  assertEquals(await store.getName("web"), pending);
  assertEquals(await store.deleteName("web", pending, [a.id, b.id]), true);
  assertEquals([await store.getName("web"), await store.get(a.id), await store.get(b.id)], [undefined, undefined, undefined]);
  assertEquals(await store.dueDeletions(Number.MAX_SAFE_INTEGER), []);

  // A key without a record is a name of its own: its first record is written from none.
  assertEquals(await store.put(c), true);
  const own: KeyNameRecord = { name: c.id, primary: d.id, versions: [{ id: c.id, version: 1 }, { id: d.id, version: 2, created: 9 }], state: "enabled" };
  assertEquals(await store.writeName(undefined, own, d), true);
  assertEquals([(await store.get(c.id))?.name, (await store.get(d.id))?.name], [undefined, c.id]);
  assertEquals(await store.deleteName(c.id, undefined, [c.id, d.id]), false, "it has a record now");
  assertEquals(await store.deleteName(c.id, own, [c.id, d.id]), true);

  // The master key fence applies to a new version as to any new key.
  const fenced: KeyNameRecord = { name: "fenced", primary: d.id, versions: [{ id: d.id, version: 1 }], state: "enabled" };
  const recorded = await store.getMeta(META.MASTER_KEY_ID);
  const other = new Uint8Array([recorded?.[0] === 1 ? 2 : 1]);
  if (recorded !== undefined) {
    await assertRejects(() => store.writeName(undefined, fenced, d, other), SealedUnderOtherKey);
    assertEquals([await store.getName("fenced"), await store.get(d.id)], [undefined, undefined], "nothing written");
  }
  assertEquals(await store.count(), before, "as it was");
}

/**
 * A store made by keycell before named keys (its schema's SQL, or its values) opened by this one:
 * its keys are names of their own, and can be rotated.
 *
 * @param makeOld writes a store of the old form holding `key`.
 * @param open opens it with this code.
 *
 * @example
 * ```ts
 * import type { KeyStore, StoredKey } from "../src/core/key_store.ts";
 * import { oldStoreConformance } from "./_store_conformance.ts";
 *
 * declare function makeOld(key: StoredKey): Promise<void>;
 * declare function open(): Promise<KeyStore>;
 * await oldStoreConformance({ makeOld, open });
 * ```
 */
export async function oldStoreConformance(backend: { makeOld(key: StoredKey): Promise<void>; open(): Promise<KeyStore> }): Promise<void> {
  const old = await namedKey({ name: "ECDSA", namedCurve: "P-256" }, "ECC_NIST_P256");
  await backend.makeOld(old);
  const store = await backend.open();
  try {
    assertEquals(await store.get(old.id), old, "the old key as it was, a name of its own");
    assertEquals(await store.getName(old.id), undefined);
    assertEquals((await store.list({ limit: 10 })).keys, [{ id: old.id, keySpec: old.keySpec, publicKey: old.publicKey }]);
    assertEquals(await store.findByKeylessName({ ski: keylessNames(old.publicKey)!.ski }), old.id);
    const next = key(105);
    const rotated: KeyNameRecord = { name: old.id, primary: next.id, versions: [{ id: old.id, version: 1 }, { id: next.id, version: 2 }], state: "enabled" };
    assertEquals(await store.writeName(undefined, rotated, next), true);
    assertEquals(await store.getName(old.id), rotated);
    assertEquals(await store.get(old.id), old);
  } finally {
    await store.close();
  }
}
