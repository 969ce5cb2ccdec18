import { assert, assertEquals, assertRejects, assertThrows } from "../../test/_assert.ts";
import { decodeKeyRecord, decodeResponse, encodeRequest, KEY_SPEC_CODES, keyIdBytes, Op, Status, toHex } from "../core/protocol.ts";
import { Compartment } from "../guest/compartment.ts";
import { type Fetcher, MASTER_KEY_BUFFER_BYTES, masterKeyFromSecret, readMasterKey, SignerService } from "./signer_service.ts";
import { wasmModule } from "../../test/_wasm.ts";

const MODULE = wasmModule();
const URL_ = "http://secrets/master.key";

/** A byte stream (as workerd's bodies are) of `bytes` in chunks of at most 20 bytes. */
function byteStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    type: "bytes",
    start(controller) {
      for (let at = 0; at < bytes.length; at += 20) controller.enqueue(bytes.slice(at, at + 20));
      controller.close();
    },
  });
}

/** Serves `files` like a `disk` service: 404 for anything else. */
function disk(files: Record<string, Uint8Array>): Fetcher & { reads: number } {
  return {
    reads: 0,
    fetch(url) {
      const body = files[url];
      if (body !== undefined) this.reads++;
      return Promise.resolve(body === undefined ? new Response("not found", { status: 404 }) : new Response(byteStream(body)));
    },
  };
}

/** The id a guest gives this master key. */
function idOf(key: Uint8Array): string {
  const compartment = Compartment.create({
    wasm: MODULE,
    masterKey: { name: "test", size: () => key.length, read: (into) => into.set(key) },
  });
  return compartment.masterKeyId!;
}

async function call(service: SignerService, op: Op, ...parts: Uint8Array[]) {
  return decodeResponse(await service.request(encodeRequest(op, ...parts)));
}

Deno.test("SignerService: loads the guest on first use with the master key, and again after a trap", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const secrets = disk({ [URL_]: key });
  const service = new SignerService({ module: MODULE, masterKey: { secrets, url: URL_ }, masterKeyId: idOf(key) });
  assertEquals(secrets.reads, 0, "nothing is read before a request");
  const id = await call(service, Op.MASTER_KEY_ID);
  assertEquals([id.status, toHex(id.body)], [Status.OK, idOf(key)]);

  const made = await call(service, Op.GENERATE, new Uint8Array([KEY_SPEC_CODES.ECC_NIST_P256]));
  assertEquals(made.status, Status.OK);
  const record = decodeKeyRecord(made.body)!;
  assert(record.sealed !== undefined);

  assertEquals((await call(service, Op.TRAP)).status, Status.GUEST_TRAPPED);
  assertEquals((await call(service, Op.HEALTH)).status, Status.OK);
  assertEquals([service.loads, secrets.reads], [2, 2], "a fresh guest, from a fresh read of the key");
  // The new guest holds the same master key: it opens what the first one sealed.
  assertEquals((await call(service, Op.UNSEAL, keyIdBytes(record.id)!, record.sealed!)).status, Status.OK);
});

Deno.test("SignerService: a master key other than the expected one, or none, is refused on every load", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const other = crypto.getRandomValues(new Uint8Array(32));
  const wrong = new SignerService({ module: MODULE, masterKey: { secrets: disk({ [URL_]: other }), url: URL_ }, masterKeyId: idOf(key) });
  assertEquals((await call(wrong, Op.HEALTH)).status, Status.UNAVAILABLE);

  // Without an expected id, the first key loaded sets it: a key changed under a running isolate is refused.
  const files = { [URL_]: key };
  const service = new SignerService({ module: MODULE, masterKey: { secrets: disk(files), url: URL_ } });
  assertEquals((await call(service, Op.HEALTH)).status, Status.OK);
  files[URL_] = other;
  assertEquals((await call(service, Op.TRAP)).status, Status.GUEST_TRAPPED);
  assertEquals((await call(service, Op.HEALTH)).status, Status.UNAVAILABLE);
  files[URL_] = key;
  assertEquals((await call(service, Op.HEALTH)).status, Status.OK);

  const missing = new SignerService({ module: MODULE, masterKey: { secrets: disk({}), url: URL_ } });
  assertEquals((await call(missing, Op.HEALTH)).status, Status.UNAVAILABLE);
});

Deno.test("readMasterKey: exactly 32 bytes, handed over once, then zeros are never handed over", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const source = await readMasterKey(disk({ [URL_]: key }), URL_);
  assertEquals(source.size(), 32);
  const into = new Uint8Array(32);
  source.read(into);
  assertEquals(into, key);
  assertThrows(() => source.size(), /handed to a guest already/);

  for (const length of [0, 31, 33, MASTER_KEY_BUFFER_BYTES, 4096]) {
    await assertRejects(() => readMasterKey(disk({ [URL_]: new Uint8Array(length) }), URL_), /bytes/, `${length} bytes`);
  }
  await assertRejects(() => readMasterKey(disk({}), URL_), /missing/);
});

Deno.test("masterKeyFromSecret: 64 hex digits, handed over once; a platform secret signs like the file", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const source = masterKeyFromSecret(key.toHex(), "secret MASTER_KEY");
  const into = new Uint8Array(32);
  source.read(into);
  assertEquals(into, key);
  assertThrows(() => source.size(), /handed to a guest already/);
  for (const bad of ["", key.toHex().slice(2), `${key.toHex()}00`, "zz".repeat(32)]) {
    assertThrows(() => masterKeyFromSecret(bad, "secret MASTER_KEY"), /64 hex digits/);
  }
  const service = new SignerService({ module: MODULE, masterKey: { secret: key.toHex(), name: "secret MASTER_KEY" }, masterKeyId: idOf(key) });
  assertEquals((await call(service, Op.TRAP)).status, Status.GUEST_TRAPPED);
  assertEquals((await call(service, Op.HEALTH)).status, Status.OK);
  assertEquals(service.loads, 2);
});
