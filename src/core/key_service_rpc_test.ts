import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { wrapForImport } from "../../test/_wrap.ts";
import { SqliteKeyStore } from "../deno/store/sqlite.ts";
import { InlineTransport } from "../guest/inline.ts";
import { KeycellError, keylessErrorOf, KeylessError } from "./errors.ts";
import { keyServiceHandler, Method, RemoteKeyService } from "./key_service_rpc.ts";
import { SealedSigner } from "./sealed_keys.ts";
import { ProtocolSignerClient } from "./signer_client.ts";
import { tempDir } from "../../test/_temp.ts";
import { WASM } from "../../test/_wasm.ts";


function isError(code: KeycellError["code"]) {
  return (err: unknown) => err instanceof KeycellError && err.code === code;
}

Deno.test("key service RPC: every method answers as the service does in-process, errors by their codes", async () => {
  const dir = await tempDir("keycell-rpc-");
  const client = new ProtocolSignerClient(InlineTransport.start({ wasm: WASM, masterKeyPath: `${dir}/master.key`, createMasterKey: true }));
  const local = new SealedSigner(client, SqliteKeyStore.open(`${dir}/keys.db`));
  const remote = new RemoteKeyService(keyServiceHandler(local), () => local.close());
  try {
    const generated = await remote.generate("ECC_NIST_P256");
    assertEquals(await remote.getKey(generated.id), generated);
    const message = new TextEncoder().encode("over the RPC");
    const signature = await remote.sign({ keyId: generated.id, algorithm: "ECDSA_SHA_256", messageType: "RAW", message, signatureFormat: "RAW" });
    const publicKey = await crypto.subtle.importKey("spki", generated.publicKey as BufferSource, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    assert(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, publicKey, signature as BufferSource, message), "WebCrypto verifies");

    const [p256] = await makeKeys(dir, ["ECC_NIST_P256"]);
    const wrapping = await remote.wrappingKey();
    assertEquals(wrapping, { id: wrapping.id, spki: (await local.wrappingKey()).spki });
    const imported = await remote.importWrapped("ECC_NIST_P256", await wrapForImport(dir, wrapping.spki, p256.path));
    assertEquals(imported.id, p256.id);

    const page = await remote.listPage({ limit: 1 });
    assertEquals(page.keys.length, 1);
    assert(page.nextCursor !== undefined);
    assertEquals((await remote.listPage({ limit: 10, cursor: page.nextCursor })).keys.length, 1);

    await remote.health();
    assertEquals((await remote.injectTrap()).code, "internal");
    await remote.deleteKey(imported.id);
    await assertRejects(() => remote.getKey(imported.id), isError("key_not_found"));
    await assertRejects(() => remote.getKey("../etc/passwd"), isError("key_not_found"));
    await assertRejects(() => remote.sign({ keyId: generated.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message }), isError("bad_request"));
    // The opcode does not fit the key: bad_request over HTTP, and still CRYPTO_FAILED on the Keyless wire.
    await assertRejects(
      () => remote.sign({ keyId: generated.id, algorithm: "RSASSA_PSS_SHA_256", messageType: "RAW", message }),
      (err) => isError("bad_request")(err) && keylessErrorOf(err) === KeylessError.CRYPTO_FAILED,
    );
    assertEquals((await remote.listKeys()).map((k) => k.id), [generated.id], "listKeys pages through listPage");
    await assertRejects(() => remote.importWrapped("ECC_NIST_P256", new Uint8Array(600)), isError("bad_request"));
  } finally {
    await remote.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("key service RPC: malformed requests are bad_request, transport failures signer_unavailable, unknown codes internal", async () => {
  const service = {} as ConstructorParameters<typeof SealedSigner>[0] as never;
  const handle = keyServiceHandler(service);
  const answer = async (bytes: number[]) => JSON.parse(new TextDecoder().decode((await handle(new Uint8Array(bytes))).subarray(1)));
  assertEquals((await answer([99])).code, "bad_request", "an unknown method");
  assertEquals((await answer([Method.LIST_PAGE, 0x7b])).code, "bad_request", "JSON that does not parse");
  assertEquals((await answer([Method.SIGN, 1, 2])).code, "bad_request", "a short sign request");
  assertEquals((await answer([Method.GENERATE, ...new TextEncoder().encode("RSA_1024")])).code, "bad_request");

  const down = new RemoteKeyService(() => Promise.reject(new Error("connection refused")));
  await assertRejects(() => down.health(), isError("signer_unavailable"));
  const odd = new RemoteKeyService(() => Promise.resolve(new Uint8Array([1, ...new TextEncoder().encode('{"code":"teapot","message":"x"}')])));
  await assertRejects(() => odd.health(), isError("internal"));
});
