import { assert, assertEquals } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { webCryptoVerify } from "../../test/_verify.ts";
import { decodeKeyList, decodeKeyRecord, decodeResponse, encodeRequest, KEY_SPEC_CODES, keyIdBytes, Op, Status } from "../core/protocol.ts";
import { ProtocolSignerClient } from "../core/signer_client.ts";
import { InlineTransport, type StartOptions } from "../guest/inline.ts";
import { type PoolMember, PoolTransport } from "./pool.ts";
import { WorkerTransport } from "./worker_transport.ts";
import { KeycellError } from "../core/errors.ts";
import { WASM } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";

const root = await tempDir("keycell-pool-");
const keys = await makeKeys(root, ["ECC_NIST_P256", "RSA_2048"]);
const keysDir = `${root}/keys`;
const [p256] = keys;
const message = new TextEncoder().encode("signed by one of several instances");

/**
 * An in-isolate instance that can be made to "crash": it is then replaced by a fresh guest with
 * only the key directory, and counts a restart, as a replaced worker does.
 */
class CrashableMember implements PoolMember {
  readonly mode = "worker";
  restarts = 0;
  #inline: InlineTransport;
  constructor(readonly options: StartOptions) {
    this.#inline = InlineTransport.start(options);
  }
  get keyFiles() {
    return this.#inline.keyFiles;
  }
  crash(): void {
    this.#inline = InlineTransport.start(this.options);
    this.restarts++;
  }
  request(request: Uint8Array): Promise<Uint8Array> {
    return this.#inline.request(request);
  }
  close(): Promise<void> {
    return this.#inline.close();
  }
  async heldIds(): Promise<string[]> {
    return decodeKeyList(decodeResponse(await this.request(encodeRequest(Op.LIST))).body)!.map((k) => k.id).sort();
  }
}

async function crashablePool(instances: number) {
  const members: CrashableMember[] = [];
  const pool = await PoolTransport.start({ wasm: WASM, keysDir }, {
    instances,
    startMember: (options) => {
      const member = new CrashableMember(options);
      members.push(member);
      return Promise.resolve(member);
    },
  });
  return { pool, members, client: new ProtocolSignerClient(pool) };
}

async function errorCode(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof KeycellError) return err.code;
    throw err;
  }
  return "no error";
}

Deno.test("pool: a generated key is signed by the instance that made it; LIST merges every instance", async () => {
  const { members, client } = await crashablePool(3);
  try {
    const generated = [];
    for (let i = 0; i < 6; i++) generated.push(await client.generate("ECC_NIST_P256"));
    const holders = await Promise.all(members.map((m) => m.heldIds()));
    for (const key of generated) {
      assertEquals(holders.filter((ids) => ids.includes(key.id)).length, 1, "a generated key lives in one instance");
      for (let i = 0; i < 4; i++) {
        const signature = await client.sign({ keyId: key.id, algorithm: "ECDSA_SHA_256", messageType: "RAW", message, signatureFormat: "RAW" });
        assert(await webCryptoVerify({ spki: key.publicKey }, "ECDSA_SHA_256", message, signature));
      }
    }
    assert(holders.every((ids) => ids.length > keys.length), "generation is spread over the instances");
    const listed = (await client.listKeys()).map((k) => k.id).sort();
    assertEquals(listed, [...keys.map((k) => k.id), ...generated.map((k) => k.id)].sort(), "every key once");

    await client.deleteKey(p256.id);
    for (const member of members) assert(!(await member.heldIds()).includes(p256.id), "a drop reaches every holder");
    assertEquals(await errorCode(client.getKey(p256.id)), "key_not_found");
  } finally {
    await client.close();
  }
});

Deno.test("pool: a crashed instance loses only its own generated keys; the others keep serving", async () => {
  const { members, client } = await crashablePool(2);
  try {
    const byMember = new Map<CrashableMember, string>();
    for (let i = 0; i < 20 && byMember.size < 2; i++) {
      const key = await client.generate("ECC_NIST_P256");
      for (const m of members) if ((await m.heldIds()).includes(key.id)) byMember.set(m, key.id);
    }
    assertEquals(byMember.size, 2, "each instance made a key");
    const [survivor, crashed] = members;
    crashed.crash();

    const sign = (keyId: string) => client.sign({ keyId, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32) });
    assertEquals(await errorCode(sign(byMember.get(crashed)!)), "key_not_found", "its generated key went with it");
    assertEquals((await sign(byMember.get(survivor)!)).length > 0, true, "the other instance's key still signs");
    for (let i = 0; i < 10; i++) assert((await sign(p256.id)).length > 0, "key-directory keys sign on both");
    const listed = (await client.listKeys()).map((k) => k.id);
    assert(!listed.includes(byMember.get(crashed)!), "the lost key is no longer listed");
    assert(listed.includes(byMember.get(survivor)!));
  } finally {
    await client.close();
  }
});

/** A guest in this isolate that counts the requests it is given. */
class CountingMember implements PoolMember {
  readonly mode = "worker";
  signs = 0;
  /** While set, requests wait for it, as requests to a busy worker do. */
  busy: Promise<void> | undefined;
  readonly #inline: InlineTransport;
  constructor(options: StartOptions) {
    this.#inline = InlineTransport.start(options);
  }
  get keyFiles() {
    return this.#inline.keyFiles;
  }
  async request(request: Uint8Array): Promise<Uint8Array> {
    if (request[0] === Op.SIGN) this.signs++;
    await this.busy;
    return this.#inline.request(request);
  }
  close(): Promise<void> {
    return this.#inline.close();
  }
}

Deno.test("pool with a guest in this isolate: a request that comes alone is signed there, the rest by the workers", async () => {
  const dir = await tempDir("keycell-pool-inline-");
  const masterKeyPath = `${dir}/master.key`;
  await InlineTransport.start({ wasm: WASM, masterKeyPath, createMasterKey: true }).close();
  let alone = true;
  const workers: CountingMember[] = [];
  let inline!: CountingMember;
  const pool = await PoolTransport.start({ wasm: WASM, keysDir, masterKeyPath }, {
    instances: 2,
    startMember: (options) => {
      workers.push(new CountingMember(options));
      return Promise.resolve(workers.at(-1)!);
    },
    // As the key server's scheduler answers for a request alone: only with the workers idle.
    inlineWhen: (workersIdle) => alone && workersIdle,
    startInline: (options) => (inline = new CountingMember(options)),
  });
  const client = new ProtocolSignerClient(pool);
  const signs = () => [inline.signs, workers[0].signs + workers[1].signs];
  const sign = (keyId: string) => client.sign({ keyId, algorithm: "ECDSA_SHA_256", messageType: "RAW", message, signatureFormat: "RAW" });
  try {
    assertEquals(pool.instances, 2, "the guest in this isolate is not counted as a worker");
    await sign(p256.id);
    assertEquals(signs(), [1, 0], "a key-directory key, alone: signed in this isolate");
    alone = false;
    await sign(p256.id);
    assertEquals(signs(), [1, 1], "not alone: signed by a worker");

    // A generated key is made in a worker and opened here from its sealed blob.
    const held = pool.inline!.keys;
    assertEquals(held, keys.length, "the guest here loaded the key directory");
    const made = decodeKeyRecord(decodeResponse(await pool.request(encodeRequest(Op.GENERATE, new Uint8Array([KEY_SPEC_CODES.ECC_NIST_P256])))).body)!;
    assert(made.sealed !== undefined, "the guest sealed the key it made");
    await pool.request(encodeRequest(Op.HEALTH));
    assertEquals(pool.inline, { keys: held + 1 }, "the generated key was opened in this isolate too");
    alone = true;
    const signature = await sign(made.id);
    assertEquals(signs(), [2, 1]);
    assert(await webCryptoVerify(made, "ECDSA_SHA_256", message, signature), "its signature verifies");

    // Dropped everywhere; opened again from the blob, in a worker and here.
    await client.deleteKey(made.id);
    assertEquals(await errorCode(sign(made.id)), "key_not_found", "a dropped key is gone from this isolate too");
    assertEquals(decodeResponse(await pool.request(encodeRequest(Op.UNSEAL, keyIdBytes(made.id)!, made.sealed))).status, Status.OK);
    await pool.request(encodeRequest(Op.HEALTH));
    await sign(made.id);
    assertEquals(signs(), [3, 1], "an opened key, alone: signed here");

    // A worker still busy keeps a request alone off this isolate: the pool tells the caller.
    let release!: () => void;
    const busy = new Promise<void>((resolve) => release = resolve);
    for (const worker of workers) worker.busy = busy;
    alone = false;
    const first = sign(p256.id);
    alone = true;
    const second = sign(p256.id);
    assertEquals(pool.outstanding.reduce((a, b) => a + b), 2, "both wait for workers");
    release();
    await Promise.all([first, second]);
    assertEquals(signs(), [3, 3]);
  } finally {
    await client.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pool of workers: concurrent signs use every instance", async () => {
  const pool = await PoolTransport.start({ wasm: WASM, keysDir }, { instances: 2 });
  const client = new ProtocolSignerClient(pool);
  try {
    const signs = Array.from({ length: 20 }, () =>
      client.sign({ keyId: p256.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32) }));
    assertEquals(pool.outstanding, [10, 10], "requests are spread by how many each instance has in flight");
    assertEquals((await Promise.all(signs)).every((s) => s.length > 0), true);
    assertEquals(pool.outstanding, [0, 0]);
  } finally {
    await client.close();
  }
});

Deno.test("pool of workers: a replaced worker fails only its own requests and comes back with the key directory", async () => {
  const workers: WorkerTransport[] = [];
  const pool = await PoolTransport.start({ wasm: WASM, keysDir }, {
    instances: 2,
    startMember: async (options) => {
      // Key generation may take 1 ms here, so an RSA-4096 generation gets its worker replaced.
      const worker = await WorkerTransport.start(options, { generateMs: 1 });
      workers.push(worker);
      return worker;
    },
  });
  const client = new ProtocolSignerClient(pool);
  const sign = () => client.sign({ keyId: p256.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32) });
  try {
    const generating = errorCode(client.generate("RSA_4096"));
    // The busy instance has a request in flight, so these go to the other one and never wait on it.
    for (let i = 0; i < 10; i++) assert((await sign()).length > 0);
    assertEquals(await generating, "signer_unavailable", "the stuck request fails");
    assertEquals(workers.map((w) => w.restarts).sort(), [0, 1], "one worker was replaced, the other untouched");
    const after = await Promise.all(Array.from({ length: 10 }, sign));
    assertEquals(after.every((s) => s.length > 0), true, "both instances sign again");
    assertEquals((await client.listKeys()).length, keys.length);
  } finally {
    await client.close();
  }
});

Deno.test("pool: zero instances is refused", async () => {
  let message = "";
  try {
    await PoolTransport.start({ wasm: WASM, keysDir }, { instances: 0 });
  } catch (err) {
    message = (err as Error).message;
  }
  assert(message.includes("at least one instance"), message);
});
