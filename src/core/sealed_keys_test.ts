import { DatabaseSync } from "node:sqlite";
import { assertEquals, assertRejects } from "../../test/_assert.ts";
import { KeycellError } from "./errors.ts";
import { keylessNames } from "./key_names.ts";
import { SqliteKeyStore } from "../deno/store/sqlite.ts";
import type { KeyStore } from "./key_store.ts";
import { encodeResponse, Op, Status } from "./protocol.ts";
import { ProtocolSignerClient, type Transport } from "./signer_client.ts";
import { InlineTransport } from "../guest/inline.ts";
import { PoolTransport } from "../deno/pool.ts";
import { SealedSigner } from "./sealed_keys.ts";
import { WASM } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";
import { webCryptoVerify } from "../../test/_verify.ts";

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

/** `store` with every call but `close` answered by `behaviour`, told the call's name. */
function storeAnswering(store: KeyStore, behaviour: (call: string) => Promise<never>): KeyStore {
  return new Proxy(store, {
    get: (target, name) => {
      if (name === "kind") return "test";
      if (name === "close") return () => Promise.resolve();
      const value = target[name as keyof KeyStore];
      return typeof value === "function" ? () => behaviour(String(name)) : value;
    },
  });
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
    const failing = (behaviour: () => Promise<never>) => storeAnswering(real, behaviour);
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

Deno.test("a store that never answers costs a request one deadline, over all its store calls", async () => {
  const dir = await tempDir();
  try {
    const masterKeyPath = `${dir}/master.key`;
    const real = SqliteKeyStore.open(`${dir}/keys.db`);
    const maker = new SealedSigner(new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath, createMasterKey: true })), real);
    const key = await maker.generate("ECC_NIST_P256");
    // Every call starts and none answers. A signature with a key this guest has not opened asks
    // the store up to three times (two calls to confirm the key, one to unseal it).
    const started: string[] = [];
    const hanging = storeAnswering(real, (name) => (started.push(name), new Promise<never>(() => {})));
    const signer = new SealedSigner(new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath })), hanging, { storeTimeoutMs: 50 });
    assertEquals(await code(signP256(signer, key.id)), "signer_unavailable");
    assertEquals(started, ["get"], "the request's time for the store ran out on its first call, so it made no other");
    started.length = 0;
    assertEquals(await code(signer.describeKey(key.id)), "signer_unavailable");
    assertEquals(started, ["getName"]);
    await signer.close();
    await maker.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a key the guests lose between opening it and signing is opened again; one they keep losing is signer_unavailable, never key_not_found", async () => {
  const dir = await tempDir();
  try {
    const masterKeyPath = `${dir}/master.key`;
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    const maker = new SealedSigner(new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath, createMasterKey: true })), store);
    const key = await maker.generate("ECC_NIST_P256");
    await maker.close();
    // As a guest re-created after a trap, or one whose cache let the key go, answers: the first
    // `lost` signatures find no key, whatever was opened before them.
    const losing = (lost: number): Transport => {
      const guest = InlineTransport.start({ wasm: WASM, masterKeyPath });
      return {
        mode: "test",
        request: (request) => request[0] === Op.SIGN && lost-- > 0 ? Promise.resolve(encodeResponse(Status.KEY_NOT_FOUND)) : guest.request(request),
        close: () => guest.close(),
      };
    };
    for (const [lost, expected] of [[2, "resolved"], [10, "signer_unavailable"]] as const) {
      const signer = new SealedSigner(new ProtocolSignerClient(losing(lost)), SqliteKeyStore.open(`${dir}/keys.db`));
      assertEquals(await code(signP256(signer, key.id)), expected, `${lost} signatures lost`);
      await signer.close();
    }
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

Deno.test("Keyless names: the store's answer stands while its key's check does; unknown names, and keys deleted here, are asked again", async () => {
  const dir = await tempDir();
  try {
    const client = new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath: `${dir}/master.key`, createMasterKey: true }));
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    let lookups = 0;
    const counting: KeyStore = new Proxy(store, {
      get(target, property) {
        if (property === "findByKeylessName") return (by: Parameters<KeyStore["findByKeylessName"]>[0]) => (lookups++, target.findByKeylessName(by));
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const signer = new SealedSigner(client, counting, { recheckMs: 60_000 });
    const key = await signer.generate("ECC_NIST_P256");
    const { ski } = keylessNames(key.publicKey)!;
    assertEquals(await signer.findKey({ ski }), key.id);
    await signP256(signer, key.id);
    lookups = 0;
    for (let i = 0; i < 3; i++) assertEquals(await signer.findKey({ ski }), key.id);
    assertEquals(lookups, 0, "a name the store answered, for a key it showed within recheckMs");
    for (let i = 0; i < 2; i++) assertEquals(await signer.findKey({ ski: new Uint8Array(20) }), undefined);
    assertEquals(lookups, 2, "a name no key has is asked every time: a key stored beside is found at once");
    await signer.deleteKey(key.id);
    assertEquals(await signer.findKey({ ski }), undefined, "deleted here: asked again, and gone");
    assertEquals(lookups, 3);

    const strict = new SealedSigner(client, counting, { recheckMs: 0 });
    const other = await strict.generate("ECC_NIST_P256");
    await signP256(strict, other.id);
    lookups = 0;
    assertEquals(await strict.findKey({ ski: keylessNames(other.publicKey)!.ski }), other.id);
    assertEquals(await strict.findKey({ ski: keylessNames(other.publicKey)!.ski }), other.id);
    assertEquals(lookups, 2, "recheckMs 0: the store is asked every time");
    await client.close();
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A signer over an inline guest and a SQLite store in `dir`, on a clock the test moves. */
function namedSigner(dir: string, clock: { now: number }, store: KeyStore = SqliteKeyStore.open(`${dir}/keys.db`)): SealedSigner {
  const inline = InlineTransport.start({ wasm: WASM, masterKeyPath: `${dir}/master.key`, createMasterKey: true });
  return new SealedSigner(new ProtocolSignerClient(inline), store, { now: () => clock.now });
}

const HELLO = new TextEncoder().encode("hello");

/** Signs "hello" with `keyId`, and says whether the signature is `publicKey`'s. */
async function signsAs(signer: SealedSigner, keyId: string, publicKey: Uint8Array): Promise<boolean> {
  const signature = await signer.sign({ keyId, algorithm: "ECDSA_SHA_256", messageType: "RAW", message: HELLO, signatureFormat: "RAW" });
  return await webCryptoVerify({ spki: publicKey }, "ECDSA_SHA_256", HELLO, signature);
}

Deno.test("named keys: made with metadata, rotated in the guest; the name signs with its primary, every version by its own id", async () => {
  const dir = await tempDir();
  const clock = { now: 1_000 };
  const signer = namedSigner(dir, clock);
  try {
    const first = await signer.generate("ECC_NIST_P256", { name: "web", description: "the web key", labels: { team: "edge" } });
    assertEquals(first.name, "web");
    assertEquals(await code(signer.generate("ECC_NIST_P256", { name: "web" })), "key_name_taken");
    assertEquals(await code(signer.generate("ECC_NIST_P256", { name: "ab".repeat(32) })), "bad_request", "an id is no name");
    assertEquals(await signer.resolveKey("web", "sign"), first.id);

    clock.now = 2_000;
    await signer.setJwks(first.id, true);
    const rotated = await signer.changeKey("web", { action: "rotate" });
    assertEquals(await signer.jwksKeyIds(), [first.id, rotated.primary].sort(), "a published name's new version is published too");
    assertEquals(rotated.versions.map((v) => [v.version, v.created]), [[1, 1_000], [2, 2_000]]);
    const second = rotated.primary;
    assertEquals([rotated.id, rotated.keySpec, rotated.state, rotated.description, rotated.labels], [second, "ECC_NIST_P256", "enabled", "the web key", { team: "edge" }]);
    assertEquals(await signer.resolveKey("web", "sign"), second, "the name signs with the new primary");
    const described = await signer.describeKey(first.id);
    assertEquals([described.name, described.id, described.primary], ["web", first.id, second], "an old id names its own key, and the name");
    assertEquals(await signsAs(signer, first.id, first.publicKey), true, "the old version still signs by its id");
    assertEquals(await signsAs(signer, second, rotated.publicKey), true);
    assertEquals(await signsAs(signer, second, first.publicKey), false);
    assertEquals((await signer.listPage({ limit: 10 })).keys.map((k) => k.name), ["web", "web"]);
  } finally {
    await signer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("named keys: a rotation whose store write fails leaves the old primary primary and stores no new version", async () => {
  const dir = await tempDir();
  const real = SqliteKeyStore.open(`${dir}/keys.db`);
  let failWrites = false;
  const flaky = new Proxy(real, {
    get: (target, method: keyof KeyStore) =>
      method === "writeName" && failWrites
        ? () => Promise.reject(new Error("disk full"))
        : typeof target[method] === "function"
        ? (target[method] as (...args: unknown[]) => unknown).bind(target)
        : target[method],
  });
  const signer = namedSigner(dir, { now: 1 }, flaky);
  try {
    const key = await signer.generate("ECC_NIST_P256", { name: "api" });
    failWrites = true;
    assertEquals(await code(signer.changeKey("api", { action: "rotate" })), "signer_unavailable");
    failWrites = false;
    const after = await signer.describeKey("api");
    assertEquals([after.primary, after.versions.length], [key.id, 1]);
    assertEquals(await real.count(), 1, "no stray version stored");
    assertEquals(await signer.resolveKey("api", "sign"), key.id);
  } finally {
    await signer.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("named keys: a key in a store made before names signs by its id, which is its name, and rotates", async () => {
  const dir = await tempDir();
  try {
    const maker = namedSigner(dir, { now: 1 }, SqliteKeyStore.open(`${dir}/new.db`));
    const made = await maker.generate("ECC_NIST_P256");
    await maker.close();
    // The store as 450cfc4 wrote it: its schema, and the key's row.
    const fresh = new DatabaseSync(`${dir}/new.db`);
    const stored = fresh.prepare("SELECT id, key_spec, public_key, sealed FROM keys").get() as Record<string, Uint8Array | string>;
    fresh.close();
    const old = new DatabaseSync(`${dir}/keys.db`);
    old.exec(`
      CREATE TABLE keys (id TEXT PRIMARY KEY, key_spec TEXT NOT NULL, public_key BLOB NOT NULL, sealed BLOB NOT NULL, ski BLOB, cert_digest BLOB) WITHOUT ROWID;
      CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    `);
    old.prepare("INSERT INTO keys (id, key_spec, public_key, sealed) VALUES (?, ?, ?, ?)").run(stored.id, stored.key_spec, stored.public_key, stored.sealed);
    old.close();

    const signer = namedSigner(dir, { now: 5 });
    try {
      assertEquals(await signsAs(signer, made.id, made.publicKey), true, "by id");
      const asName = await signer.describeKey(made.id);
      assertEquals([asName.name, asName.primary, asName.state, asName.versions], [made.id, made.id, "enabled", [{ id: made.id, version: 1 }]]);
      assertEquals(await signer.resolveKey(made.id, "sign"), made.id, "by name, which is the id");
      const rotated = await signer.changeKey(made.id, { action: "rotate" });
      assertEquals(rotated.versions.map((v) => v.version), [1, 2]);
      assertEquals(await signsAs(signer, made.id, made.publicKey), true, "the old key still signs by its id");
      assertEquals(await signsAs(signer, rotated.primary, rotated.publicKey), true);
    } finally {
      await signer.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("named keys: a scheduled deletion refuses signing, can be cancelled into disabled, and deletes every version once due (on use, or by the sweep)", async () => {
  const dir = await tempDir();
  const day = 86_400_000;
  const clock = { now: 10 * day };
  const store = SqliteKeyStore.open(`${dir}/keys.db`);
  const signer = namedSigner(dir, clock, store);
  try {
    const key = await signer.generate("ECC_NIST_P256", { name: "old" });
    const second = (await signer.changeKey("old", { action: "rotate" })).primary;
    assertEquals(await code(signer.changeKey("old", { action: "schedule_deletion", pendingWindowDays: 6 })), "bad_request");
    const scheduled = await signer.changeKey("old", { action: "schedule_deletion", pendingWindowDays: 7 });
    assertEquals([scheduled.state, scheduled.deletionDate], ["pending_deletion", 17 * day]);
    assertEquals(await code(signP256(signer, key.id)), "key_pending_deletion");
    assertEquals(await code(signer.resolveKey("old", "sign")), "key_pending_deletion");
    assertEquals(await code(signer.changeKey("old", { action: "rotate" })), "key_pending_deletion");
    const cancelled = await signer.changeKey("old", { action: "cancel_deletion" });
    assertEquals([cancelled.state, cancelled.deletionDate], ["disabled", undefined]);
    assertEquals(await code(signP256(signer, second)), "key_disabled");
    assertEquals((await signer.changeKey("old", { action: "enable" })).state, "enabled");
    assertEquals((await signP256(signer, second)).length > 0, true, "enabled again, it signs");

    await signer.changeKey("old", { action: "schedule_deletion" });
    clock.now += 30 * day - 1;
    assertEquals((await signer.describeKey("old")).state, "pending_deletion", "not before its date");
    assertEquals(await store.count(), 2);
    clock.now += 1;
    assertEquals(await code(signer.describeKey("old")), "key_not_found", "deleted when found due");
    assertEquals([await store.count(), await store.getName("old")], [0, undefined], "every version went");
    assertEquals(await code(signP256(signer, key.id)), "key_not_found");

    const swept = await signer.generate("ECC_NIST_P256", { name: "swept" });
    const kept = await signer.generate("ECC_NIST_P256");
    await signer.changeKey("swept", { action: "schedule_deletion", pendingWindowDays: 7 });
    clock.now += 7 * day;
    assertEquals(await signer.sweepDeletions(), 1);
    assertEquals((await signer.listPage({ limit: 10 })).keys.map((k) => k.id), [kept.id]);
    assertEquals(await code(signP256(signer, swept.id)), "key_not_found");

    // The periodic sweep runs once at its start.
    await signer.changeKey(kept.id, { action: "schedule_deletion", pendingWindowDays: 7 });
    clock.now += 7 * day;
    signer.startSweeping(60_000);
    for (let i = 0; i < 100 && await store.count() > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    signer.stopSweeping();
    assertEquals(await store.count(), 0);
  } finally {
    await signer.close();
    await Deno.remove(dir, { recursive: true });
  }
});
