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
    const checked = { publicKey: generated.publicKey, algorithm: "ECDSA_SHA_256", messageType: "RAW", message, signature, signatureFormat: "RAW" } as const;
    assertEquals(await remote.verify(checked), true, "the guest verifies over the RPC");
    assertEquals(await remote.verify({ ...checked, message: new TextEncoder().encode("another") }), false);
    await assertRejects(() => remote.verify({ ...checked, algorithm: "RSASSA_PSS_SHA_256" }), isError("bad_request"));

    const [p256] = await makeKeys(dir, ["ECC_NIST_P256"]);
    const wrapping = await remote.wrappingKey();
    assertEquals(wrapping, { id: wrapping.id, spki: (await local.wrappingKey()).spki });
    const imported = await remote.importWrapped("ECC_NIST_P256", await wrapForImport(dir, wrapping.spki, p256.path), { name: "imported" });
    assertEquals([imported.id, imported.name], [p256.id, "imported"]);

    // Named keys: metadata in, details out, changes and their errors as in-process.
    const named = await remote.generate("ECC_NIST_P384", { name: "rpc", description: "over the RPC", labels: { a: "b" } });
    await assertRejects(() => remote.generate("ECC_NIST_P256", { name: "rpc" }), isError("key_name_taken"));
    const rotated = await remote.changeKey("rpc", { action: "rotate" });
    assertEquals([rotated.keySpec, rotated.versions.map((v) => v.id), rotated.labels], ["ECC_NIST_P384", [named.id, rotated.primary], { a: "b" }]);
    assertEquals(await remote.describeKey("rpc"), await local.describeKey("rpc"));
    assertEquals(await remote.resolveKey("rpc", "sign"), rotated.primary);
    assertEquals((await remote.changeKey("rpc", { action: "disable" })).state, "disabled");
    await assertRejects(() => remote.resolveKey("rpc", "sign"), isError("key_disabled"));
    assertEquals(await remote.resolveKey("rpc", "read"), rotated.primary);
    await assertRejects(() => remote.changeKey("rpc", { action: "schedule_deletion", pendingWindowDays: 40 }), isError("bad_request"));
    await remote.deleteKey("rpc");
    await assertRejects(() => remote.describeKey("rpc"), isError("key_not_found"));
    await assertRejects(() => remote.getKey(named.id), isError("key_not_found"));

    const page = await remote.listPage({ limit: 1 });
    assertEquals(page.keys.length, 1);
    assert(page.nextCursor !== undefined);
    assertEquals((await remote.listPage({ limit: 10, cursor: page.nextCursor })).keys.length, 1);

    // The JWKS set: marks go into the service's store, an unknown key is key_not_found, a deleted key leaves the set.
    assertEquals(await remote.jwksKeyIds(), []);
    await remote.setJwks(generated.id, true);
    await remote.setJwks(imported.id, true);
    assertEquals(await remote.jwksKeyIds(), [generated.id, imported.id].sort());
    assertEquals(await local.jwksKeyIds(), [generated.id, imported.id].sort(), "the marks are the service's own");
    await remote.setJwks(generated.id, false);
    assertEquals(await remote.jwksKeyIds(), [imported.id]);
    await assertRejects(() => remote.setJwks("cd".repeat(32), true), isError("key_not_found"));
    await assertRejects(() => remote.setJwks("../etc/passwd", false), isError("key_not_found"));

    await remote.health();
    assertEquals((await remote.injectTrap()).code, "internal");
    await remote.deleteKey(imported.id);
    assertEquals(await remote.jwksKeyIds(), [], "a deleted key leaves the JWKS set");
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
  assertEquals((await answer([Method.VERIFY, 7, 0, 9, 0])).code, "bad_request", "a verify request cut short");
  assertEquals((await answer([Method.GENERATE, ...new TextEncoder().encode("RSA_1024")])).code, "bad_request");
  const mark = (body: unknown) => [Method.SET_JWKS, ...new TextEncoder().encode(JSON.stringify(body))];
  assertEquals((await answer(mark({ id: "ab".repeat(32), on: "yes" }))).code, "bad_request", "a JWKS mark whose on is no boolean");
  assertEquals((await answer(mark({ on: true }))).code, "bad_request", "a JWKS mark with no id");
  assertEquals((await answer(mark({ id: "nope", on: false }))).code, "key_not_found", "a JWKS mark naming no key id");

  const down = new RemoteKeyService(() => Promise.reject(new Error("connection refused")));
  await assertRejects(() => down.health(), isError("signer_unavailable"));
  const odd = new RemoteKeyService(() => Promise.resolve(new Uint8Array([1, ...new TextEncoder().encode('{"code":"teapot","message":"x"}')])));
  await assertRejects(() => odd.health(), isError("internal"));
});
