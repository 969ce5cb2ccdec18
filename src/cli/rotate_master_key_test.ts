import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { wrapForImport } from "../../test/_wrap.ts";
import { openCompartment } from "../guest/files.ts";
import { runKeycell } from "../../test/_command.ts";
import { startSealedSigner } from "../deno/sealed_start.ts";
import { PostgresKeyStore } from "../deno/store/postgres.ts";
import { startTestPostgres } from "../../test/_postgres_server.ts";
import { SqliteKeyStore } from "../deno/store/sqlite.ts";
import { type KeyStore, META, SealedUnderOtherKey } from "../core/key_store.ts";
import { KeycellError } from "../core/errors.ts";
import { masterKeyFiles, rotateMasterKey } from "./rotate_master_key.ts";
import { WASM } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";


type OpenStore = (dir: string) => Promise<KeyStore>;
const sqlite: OpenStore = (dir) => Promise.resolve(SqliteKeyStore.open(`${dir}/keys.db`));

/** A data directory with three sealed keys and a wrapping key, its signer stopped. */
async function dataDirWithKeys(openStore = sqlite): Promise<{ dir: string; ids: string[]; masterKey: Uint8Array }> {
  const dir = await tempDir("keycell-rotate-");
  const { signer } = await startSealedSigner({ mode: "inline", wasm: WASM, store: await openStore(dir), masterKeyPath: `${dir}/master.key` });
  const ids = [];
  for (const spec of ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P256"] as const) ids.push((await signer.generate(spec)).id);
  await signer.wrappingKey();
  await signer.close();
  return { dir, ids, masterKey: await Deno.readFile(`${dir}/master.key`) };
}

/** Starts the signer on the data directory as `serve` would, and checks every key signs and the wrapping key imports. */
async function everyKeyWorks(dir: string, ids: string[], openStore = sqlite): Promise<void> {
  const { signer } = await startSealedSigner({ mode: "inline", wasm: WASM, store: await openStore(dir), masterKeyPath: `${dir}/master.key` });
  try {
    for (const keyId of ids) {
      const algorithm = "ECDSA_SHA_256";
      assert((await signer.sign({ keyId, algorithm, messageType: "DIGEST", message: new Uint8Array(32) })).length > 0, keyId);
    }
    const [p256] = await makeKeys(dir, ["ECC_NIST_P256"]);
    const wrapping = await signer.wrappingKey();
    assertEquals((await signer.importWrapped("ECC_NIST_P256", await wrapForImport(dir, wrapping.spki, p256.path))).id, p256.id);
  } finally {
    await signer.close();
  }
}

Deno.test("rotate-master-key: every blob and the wrapping key are sealed anew; only the new master key opens the store", async () => {
  const { dir, ids, masterKey } = await dataDirWithKeys();
  try {
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    const report = await rotateMasterKey({ wasm: WASM, store, dataDir: dir });
    assertEquals([report.resealed, report.wrappingKey, report.unopenable], [3, true, []]);
    assertEquals(await store.getMeta(META.MASTER_KEY_ID), Uint8Array.fromHex(report.masterKeyId));
    await store.close();

    const files = masterKeyFiles(dir);
    assertEquals(await Deno.readFile(files.previous), masterKey, "the old key is kept beside the new one");
    assert(!(await Deno.readFile(files.current)).every((b, i) => b === masterKey[i]), "master.key is a new key");
    assertEquals((await Deno.stat(files.current)).mode! & 0o777, 0o600);
    await assertRejects(() => Deno.stat(files.next), Deno.errors.NotFound);
    await everyKeyWorks(dir, ids);

    // The old master key no longer opens this store: startup says so rather than failing per key.
    await Deno.writeFile(files.current + ".new", await Deno.readFile(files.current));
    await Deno.writeFile(files.current, masterKey);
    await assertRejects(
      () => startSealedSigner({ mode: "inline", wasm: WASM, store: SqliteKeyStore.open(`${dir}/keys.db`), masterKeyPath: files.current }),
      Error,
      "is not the one the sqlite key store's keys are sealed under",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The store, but its `replaceSealed` fails after the first success, as a lost connection would. */
function failingAfterOne(store: KeyStore): KeyStore {
  let replaced = 0;
  return Object.assign(Object.create(store), {
    replaceSealed: (id: string, from: Uint8Array, to: Uint8Array) => {
      if (++replaced > 1) return Promise.reject(new Error("connection lost"));
      return store.replaceSealed(id, from, to);
    },
  });
}

Deno.test("rotate-master-key: a rotation stopped half-way is finished by running it again, wherever it stopped", async () => {
  const { dir, ids } = await dataDirWithKeys();
  const files = masterKeyFiles(dir);
  try {
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    // Stopped by the store while resealing: master.key is the old key, master.key.next the new one.
    await assertRejects(() => rotateMasterKey({ wasm: WASM, store: failingAfterOne(store), dataDir: dir }), Error, "connection lost");
    assert((await Deno.stat(files.next)).isFile, "the new key waits in master.key.next");
    await assertRejects(
      () => startSealedSigner({ mode: "inline", wasm: WASM, store, masterKeyPath: files.current }),
      Error,
      "a master key rotation is unfinished",
    );
    const first = await rotateMasterKey({ wasm: WASM, store, dataDir: dir });
    assertEquals([first.resealed, first.wrappingKey], [3, true], "the one already resealed is resealed again");
    await everyKeyWorks(dir, ids);

    // Stopped between the two renames: master.key moved to master.key.previous, the new key not yet in its place.
    await assertRejects(() => rotateMasterKey({ wasm: WASM, store: failingAfterOne(store), dataDir: dir }), Error, "connection lost");
    await Deno.rename(files.current, files.previous);
    const second = await rotateMasterKey({ wasm: WASM, store, dataDir: dir });
    assertEquals([second.previousId, second.resealed], [first.masterKeyId, 4], "with the key everyKeyWorks imported");
    assertEquals(await store.getMeta(META.MASTER_KEY_ID), Uint8Array.fromHex(second.masterKeyId));
    await store.close();
    await everyKeyWorks(dir, ids);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rotate-master-key: a master key the store was not sealed under changes nothing", async () => {
  const { dir } = await dataDirWithKeys();
  const other = await dataDirWithKeys();
  try {
    const files = masterKeyFiles(dir);
    const before = await Deno.readFile(files.current);
    const store = SqliteKeyStore.open(`${other.dir}/keys.db`);
    await assertRejects(() => rotateMasterKey({ wasm: WASM, store, dataDir: dir }), Error, "the key store's keys are sealed under master key");
    const id = await store.getMeta(META.MASTER_KEY_ID);
    await store.close();
    assertEquals(await Deno.readFile(files.current), before);
    await assertRejects(() => Deno.stat(files.next), Deno.errors.NotFound);
    await assertRejects(() => Deno.stat(files.previous), Deno.errors.NotFound);
    assertEquals(id, Uint8Array.fromHex(openCompartment({ wasm: WASM, masterKeyPath: masterKeyFiles(other.dir).current }).masterKeyId!));
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(other.dir, { recursive: true });
  }
});

Deno.test("keycell rotate-master-key on a PostgreSQL store, from the command line", async () => {
  const pg = await startTestPostgres();
  const postgres: OpenStore = () => PostgresKeyStore.open(pg.url);
  const { dir, ids, masterKey } = await dataDirWithKeys(postgres);
  try {
    const output = await runKeycell("rotate-master-key", { env: { KEYCELL_DATA_DIR: dir, KEYCELL_STORE: "postgres", KEYCELL_POSTGRES_URL: pg.url } });
    const said = output.output;
    assertEquals(output.code, 0, said);
    assert(said.includes("resealed 3 keys and the wrapping key under the new master key"), said);
    assertEquals(await Deno.readFile(masterKeyFiles(dir).previous), masterKey);
    await everyKeyWorks(dir, ids, postgres);
  } finally {
    await pg.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** The store, with `before()` run ahead of each of its calls but `close`. */
function callingFirst(store: KeyStore, before: () => void): KeyStore {
  return new Proxy(store, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function" || name === "close") return typeof value === "function" ? value.bind(target) : value;
      return (...args: unknown[]) => {
        before();
        return value.apply(target, args);
      };
    },
  });
}

for (const backend of ["sqlite", "postgres"] as const) {
  Deno.test(`rotate-master-key beside a live node generating keys (${backend}): no key is lost`, async () => {
    const pg = backend === "postgres" ? await startTestPostgres() : undefined;
    const open: OpenStore = pg ? () => PostgresKeyStore.open(pg.url) : sqlite;
    const { dir, ids } = await dataDirWithKeys(open);
    try {
      const { signer: live } = await startSealedSigner({ mode: "inline", wasm: WASM, store: await open(dir), masterKeyPath: `${dir}/master.key` });
      const held = (await live.generate("ECC_NIST_P256")).id;
      const made = [...ids, held];
      let refused = 0;
      // A generation on the live node starts ahead of every store call the rotation makes: before,
      // while and after it fences the store and reseals.
      const racing: Promise<void>[] = [];
      const generate = () =>
        racing.push(live.generate("ECC_NIST_P256").then(
          (key) => void made.push(key.id),
          (err) => {
            if (!(err instanceof SealedUnderOtherKey)) throw err;
            refused++;
          },
        ));
      const rotationStore = callingFirst(await open(dir), generate);
      const report = await rotateMasterKey({ wasm: WASM, store: rotationStore, dataDir: dir });
      await Promise.all(racing);
      assert(refused > 0, "generations after the fence are refused");
      assertEquals(report.unopenable, []);
      // Done: the live node, still on the old master key, adds nothing more, and says why.
      await assertRejects(() => live.generate("ECC_NIST_P384"), SealedUnderOtherKey);
      const digest = { algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32) } as const;
      await assertRejects(() => live.sign({ keyId: ids[0], ...digest }), SealedUnderOtherKey, "a key it had not opened: 503, not key_unusable");
      assert((await live.sign({ keyId: held, ...digest })).length > 0, "a key it holds still signs");
      await assertRejects(() => live.wrappingKey().then(() => live.importWrapped("ECC_NIST_P256", new Uint8Array(600))), KeycellError);
      await live.close();
      await rotationStore.close();
      // Restarted with the new master key, every key the live node answered for signs.
      await everyKeyWorks(dir, made, open);
    } finally {
      await pg?.stop();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a node does not start on a store whose rotation is under way (started from another node)", async () => {
  const { dir } = await dataDirWithKeys();
  try {
    const store = SqliteKeyStore.open(`${dir}/keys.db`);
    const recorded = (await store.getMeta(META.MASTER_KEY_ID))!;
    assert(await store.replaceMeta(META.MASTER_KEY_ID, recorded, new Uint8Array([...recorded, ...new Uint8Array(32).fill(7)])));
    await assertRejects(
      () => startSealedSigner({ mode: "inline", wasm: WASM, store, masterKeyPath: `${dir}/master.key` }),
      Error,
      "a master key rotation of the sqlite key store is under way",
    );
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
