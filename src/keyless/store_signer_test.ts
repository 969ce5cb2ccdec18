import { assert, assertEquals } from "../../test/_assert.ts";
import { decodeKeyList, decodeKeyRecord, decodeResponse, encodeRequest, KEY_SPEC_CODES, keyIdBytes, Op, Status } from "../core/protocol.ts";
import { startSealedSigner } from "../deno/sealed_start.ts";
import { SqliteKeyStore } from "../deno/store/sqlite.ts";
import { KeylessClient } from "./client.ts";
import { ErrorCode, Opcode } from "./codec.ts";
import { keylessNames } from "../core/key_names.ts";
import { KeylessServer } from "./server.ts";
import { storeBackedSigner } from "./store_signer.ts";

const WASM = Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url));

/** A key server's signer over the store in `dir`, as `keycell keyserver` starts it. */
async function open(dir: string) {
  const started = await startSealedSigner({
    mode: "inline",
    wasm: WASM,
    store: SqliteKeyStore.open(`${dir}/keys.db`),
    masterKeyPath: `${dir}/master.key`,
    instances: 1,
  });
  const signer = storeBackedSigner(started.signer, (r) => started.transport.request(r));
  return { signer, sealed: started.signer, close: () => started.signer.close() };
}

Deno.test("key server over the store: generated keys persist, sign after a restart (by SKI over Keyless too), and delete from the store", async () => {
  const dir = await Deno.makeTempDir({ prefix: "keycell-store-signer-" });
  const first = await open(dir);
  const made = decodeResponse(await first.signer(encodeRequest(Op.GENERATE, Uint8Array.of(KEY_SPEC_CODES.ECC_NIST_P256))));
  assertEquals(made.status, Status.OK);
  const key = decodeKeyRecord(made.body)!;
  assertEquals((await first.sealed.listKeys()).map((k) => k.id), [key.id], "the generated key is in the store");
  await first.close();

  // A new process: its guest holds nothing; the store names the key, and a sign opens it.
  const second = await open(dir);
  const server = new KeylessServer({ signer: second.signer, keys: second.sealed });
  const addr = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: addr.port });
  try {
    const listed = decodeResponse(await second.signer(encodeRequest(Op.LIST)));
    assertEquals(decodeKeyList(listed.body)?.map((k) => k.id), [key.id], "LIST answers from the store");

    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("persisted")));
    const names = keylessNames(key.spki)!;
    const res = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: names.ski });
    assert(res.kind === "ok", `Keyless sign by SKI of a key only the store held: ${JSON.stringify(res)}`);
    const raw = decodeResponse(
      await second.signer(encodeRequest(Op.SIGN, keyIdBytes(key.id)!, Uint8Array.of(7, 2), digest)),
    );
    assertEquals(raw.status, Status.OK);
    const pub = await crypto.subtle.importKey("spki", key.spki as Uint8Array<ArrayBuffer>, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    assert(
      await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, raw.body as Uint8Array<ArrayBuffer>, new TextEncoder().encode("persisted")),
      "the unsealed key signs verifiably (WebCrypto)",
    );

    assertEquals(decodeResponse(await second.signer(encodeRequest(Op.DROP, keyIdBytes(key.id)!))).status, Status.OK);
    assertEquals(await second.sealed.listKeys(), [], "DROP removes the key from the store");
    const gone = decodeResponse(await second.signer(encodeRequest(Op.SIGN, keyIdBytes(key.id)!, Uint8Array.of(7, 0), digest)));
    assertEquals(gone.status, Status.KEY_NOT_FOUND, "a deleted key is not found, in the guest or the store");
  } finally {
    client.close();
    await server.close();
    await second.close();
  }
});

Deno.test("key server over the store: a key added beside it (another process on the same store) is found at once, by name", async () => {
  const dir = await Deno.makeTempDir({ prefix: "keycell-store-signer-" });
  const server = await open(dir);
  const keyless = new KeylessServer({ signer: server.signer, keys: server.sealed });
  const addr = keyless.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: addr.port });
  const beside = await open(dir);
  try {
    const digest = new Uint8Array(32).fill(1);
    const made = decodeKeyRecord(decodeResponse(await beside.signer(encodeRequest(Op.GENERATE, Uint8Array.of(KEY_SPEC_CODES.ECC_NIST_P256)))).body)!;
    const ski = keylessNames(made.spki)!.ski;
    // Unknown names answer KEY_NOT_FOUND from the same index, and do not hold up the next request.
    const unknown = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: new Uint8Array(20) });
    assertEquals(unknown.kind === "error" ? unknown.code : unknown, ErrorCode.KEY_NOT_FOUND);
    const res = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski });
    assert(res.kind === "ok", `a key another process stored is found by its SKI: ${JSON.stringify(res)}`);
  } finally {
    client.close();
    await keyless.close();
    await beside.close();
    await server.close();
  }
});
