import { assertEquals, assertRejects } from "../../test/_assert.ts";
import { KeycellError } from "./errors.ts";
import { SqliteKeyStore } from "../deno/store/sqlite.ts";
import type { KeyStore } from "./key_store.ts";
import { ProtocolSignerClient } from "./signer_client.ts";
import { InlineTransport } from "../guest/inline.ts";
import { PoolTransport } from "../deno/pool.ts";
import { SealedSigner } from "./sealed_keys.ts";
import { WASM } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";

const DIGEST = new Uint8Array(32);

function signP256(signer: SealedSigner, keyId: string): Promise<Uint8Array> {
  return signer.sign({ keyId, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: DIGEST });
}

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "resolved";
  } catch (err) {
    return err instanceof KeycellError ? err.code : `unexpected ${err}`;
  }
}

Deno.test("a pool of guests with small caches: keys evicted anywhere come back by unsealing, and deletion reaches every guest", async () => {
  const dir = await tempDir();
  try {
    const masterKeyPath = `${dir}/master.key`;
    // Room for about three P-256 keys per guest.
    const options = { wasm: WASM, masterKeyPath, cacheBytes: 4096 };
    (await InlineTransport.start({ ...options, createMasterKey: true })).close();
    const pool = await PoolTransport.start(options, { instances: 2, startMember: (o) => Promise.resolve(InlineTransport.start(o)) });
    const signer = new SealedSigner(new ProtocolSignerClient(pool), SqliteKeyStore.open(`${dir}/keys.db`));
    const keys = [];
    for (let i = 0; i < 10; i++) keys.push(await signer.generate("ECC_NIST_P256"));
    for (let round = 0; round < 3; round++) {
      for (const key of keys) assertEquals((await signP256(signer, key.id)).length > 0, true);
    }
    for (const key of keys.slice(0, 5)) await signer.deleteKey(key.id);
    for (const key of keys.slice(0, 5)) assertEquals(await code(signP256(signer, key.id)), "key_not_found");
    for (const key of keys.slice(5)) assertEquals((await signP256(signer, key.id)).length > 0, true);
    assertEquals((await signer.listPage({ limit: 100 })).keys.map((k) => k.id), keys.slice(5).map((k) => k.id).sort());
    await signer.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a store that is down or slow is signer_unavailable, never key_not_found", async () => {
  const dir = await tempDir();
  try {
    const inline = InlineTransport.start({ wasm: WASM, masterKeyPath: `${dir}/master.key`, createMasterKey: true });
    const real = SqliteKeyStore.open(`${dir}/keys.db`);
    const healthy = new SealedSigner(new ProtocolSignerClient(inline), real);
    const key = await healthy.generate("ECC_NIST_P256");
    const stored = await real.get(key.id);

    const fresh = () => new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath: `${dir}/master.key` }));
    const failing = (behaviour: () => Promise<never>): KeyStore => new Proxy(real, {
      get: (target, name) => (name === "kind" ? "test" : name === "close" ? () => Promise.resolve() : typeof target[name as keyof KeyStore] === "function" ? behaviour : target[name as keyof KeyStore]),
    });
    const down = new SealedSigner(fresh(), failing(() => Promise.reject(new Error("connection refused"))));
    const slow = new SealedSigner(fresh(), failing(() => new Promise<never>(() => {})), { storeTimeoutMs: 50 });
    for (const signer of [down, slow]) {
      assertEquals(await code(signP256(signer, key.id)), "signer_unavailable");
      assertEquals(await code(signer.getKey(key.id)), "signer_unavailable");
      assertEquals(await code(signer.listPage({ limit: 10 })), "signer_unavailable");
      assertEquals(await code(signer.deleteKey(key.id)), "signer_unavailable");
      assertEquals(await code(signer.generate("ECC_NIST_P256")), "signer_unavailable");
      assertEquals(await code(signer.health()), "signer_unavailable");
    }
    // The same key through a working store: absent ids are key_not_found, present ones sign.
    const working = new SealedSigner(fresh(), real);
    assertEquals(await code(signP256(working, "ab".repeat(32))), "key_not_found");
    assertEquals((await signP256(working, key.id)).length > 0, true);
    assertEquals(stored?.id, key.id);
    await assertRejects(() => down.wrappingKey());
    await healthy.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a key another node deleted from the shared store stops signing here, and the guest drops it", async (t) => {
  const dir = await tempDir();
  try {
    const client = new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath: `${dir}/master.key`, createMasterKey: true }));
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    await t.step("recheckMs 0: the very next signature is refused", async () => {
      const signer = new SealedSigner(client, store, { recheckMs: 0 });
      const [gone, kept] = [await signer.generate("ECC_NIST_P256"), await signer.generate("ECC_NIST_P256")];
      assertEquals((await signP256(signer, gone.id)).length > 0, true);
      // As another node sharing the store would: the blob goes, this node's guest is not told.
      await store.delete(gone.id);
      assertEquals(await code(signP256(signer, gone.id)), "key_not_found");
      assertEquals(await code(client.sign({ keyId: gone.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: DIGEST })), "key_not_found", "dropped from the guest itself");
      assertEquals((await signP256(signer, kept.id)).length > 0, true, "other keys sign on");
    });
    await t.step("recheckMs > 0: a stale key is checked beside its signature and then refused", async () => {
      const signer = new SealedSigner(client, store, { recheckMs: 1 });
      const gone = await signer.generate("ECC_NIST_P256");
      await signP256(signer, gone.id);
      await store.delete(gone.id);
      const outcomes: string[] = [];
      for (let i = 0; i < 200 && outcomes.at(-1) !== "key_not_found"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 2));
        outcomes.push(await code(signP256(signer, gone.id)));
      }
      assertEquals(outcomes.at(-1), "key_not_found", outcomes.join(", "));
      assertEquals(await code(client.sign({ keyId: gone.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: DIGEST })), "key_not_found", "dropped from the guest itself");
    });
    await client.close();
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
