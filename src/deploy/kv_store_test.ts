import { assertEquals } from "../../test/_assert.ts";
import { nameIndexConformance, namedKeyConformance, oldStoreConformance, storeConformance } from "../../test/_store_conformance.ts";
import { tempDir } from "../../test/_temp.ts";
import { SealedUnderOtherKey } from "../core/key_store.ts";
import { KvKeyStore } from "./kv_store.ts";
import { keylessNames } from "../core/key_names.ts";

Deno.test("KvKeyStore: put/get/delete/list pages/count/metadata and the master key fence, in memory", async () => {
  const store = await KvKeyStore.open(":memory:");
  try {
    await storeConformance(store);
    await namedKeyConformance(store);
  } finally {
    await store.close();
  }
});

Deno.test("KvKeyStore: the same on a file, which keeps its keys across opens", async () => {
  const dir = await tempDir("keycell-kv-");
  try {
    const store = await KvKeyStore.open(`${dir}/keys.kv`);
    await storeConformance(store);
    await store.close();
    const reopened = await KvKeyStore.open(`${dir}/keys.kv`);
    assertEquals(await reopened.count(), 4);
    await reopened.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvKeyStore: Keyless names are indexed with their keys", async () => {
  const dir = await tempDir("keycell-kv-");
  try {
    const path = `${dir}/keys.kv`;
    // A KV store has had its name entries from its first version: nothing to forget.
    const first = await KvKeyStore.open(path);
    await nameIndexConformance(first, {
      forgetNames: () => first.close(),
      reopen: () => KvKeyStore.open(path),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KvKeyStore: a scope larger than one read, pages of it in id order; putMany over many keys", async () => {
  const store = await KvKeyStore.open(":memory:");
  try {
    const keys = Array.from({ length: 120 }, (_, i) => ({
      id: i.toString(16).padStart(64, "0"),
      keySpec: "ECC_NIST_P256" as const,
      publicKey: new Uint8Array([0x30, i]),
      sealed: new Uint8Array([i]),
    }));
    await store.putMany(keys);
    assertEquals(await store.count(), 120);
    const scope = new Set(keys.filter((_, i) => i % 3 === 0).map((k) => k.id).reverse());
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.list({ limit: 7, ids: scope, cursor });
      seen.push(...page.keys.map((k) => k.id));
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    assertEquals(seen, [...scope].sort());
  } finally {
    await store.close();
  }
});

Deno.test("KvKeyStore: racing writers: one put of an id wins, a rotation's fence stops a put that read the old id", async () => {
  const store = await KvKeyStore.open(":memory:");
  try {
    const key = { id: "ab".repeat(32), keySpec: "ECC_NIST_P256" as const, publicKey: new Uint8Array([0x30]), sealed: new Uint8Array([1]) };
    const mine = new Uint8Array(32).fill(1);
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.put({ ...key, sealed: new Uint8Array([i]) }, mine)));
    assertEquals(results.filter(Boolean).length, 1);
    const winner = await store.get(key.id);
    assertEquals(winner!.sealed, new Uint8Array([results.indexOf(true)]));
    assertEquals(await store.setMetaOnce("master_key_id", mine), mine);
    // Rotations and fenced puts interleaved: a put either lands before the fence or is refused.
    const other = { ...key, id: "cd".repeat(32) };
    const [put, fenced] = await Promise.allSettled([
      store.put(other, mine),
      store.replaceMeta("master_key_id", mine, new Uint8Array(64).fill(2)),
    ]);
    assertEquals(fenced, { status: "fulfilled", value: true });
    assertEquals(put.status === "fulfilled" ? put.value : put.reason instanceof SealedUnderOtherKey, true);
    assertEquals(await store.get(other.id) !== undefined, put.status === "fulfilled", "stored only when the put succeeded");
  } finally {
    await store.close();
  }
});

Deno.test("KvKeyStore: a store from before named keys opens as it is; its keys are names of their own", async () => {
  const dir = await tempDir("keycell-kv-");
  const path = `${dir}/keys.kv`;
  try {
    await oldStoreConformance({
      makeOld: async (key) => {
        // The entries 450cfc4 wrote for a key.
        const kv = await Deno.openKv(path);
        await kv.atomic()
          .set(["keys", key.id], { keySpec: key.keySpec, publicKey: key.publicKey, sealed: key.sealed })
          .set(["ski", keylessNames(key.publicKey)!.ski], key.id)
          .commit();
        kv.close();
      },
      open: () => KvKeyStore.open(path),
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
