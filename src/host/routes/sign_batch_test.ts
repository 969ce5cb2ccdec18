import { assert, assertEquals } from "../../../test/_assert.ts";
import { errorOf, SCOPED, sealedApp, type TestApp } from "../../../test/_app.ts";
import { makeKeys } from "../../../test/_fixtures.ts";
import { tempDir } from "../../../test/_temp.ts";
import { type AlgorithmName, digestFor, opensslCheck, webCryptoVerify } from "../../../test/_verify.ts";
import { MAX_BATCH } from "../schemas.ts";

const root = await tempDir("keycell-batch-");
const keys = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256"]);
const [rsa, p256] = keys;
const UTF8 = new TextEncoder();

async function open(maxBodyBytes?: number, mode: "inline" | "worker" = "inline"): Promise<TestApp> {
  return await sealedApp({
    dir: await tempDir("keycell-batch-store-"),
    importKeysDir: `${root}/keys`,
    scopedKeys: [p256.id],
    maxBodyBytes,
    mode,
  });
}

function batch(t: TestApp, id: string, json: unknown, token?: string | null): Promise<Response> {
  return t.request(`/v1/keys/${id}/sign-batch`, { method: "POST", json, token });
}

for (const mode of ["inline", "worker"] as const) {
  Deno.test(`${mode}: sign-batch: each item answered in order; bad items fail alone with their own error; good ones verify`, async () => {
    const t = await open(undefined, mode);
    try {
      const messages = Array.from({ length: 6 }, (_, i) => UTF8.encode(`batch message ${i}`));
      const digest = await digestFor("RSASSA_PKCS1_V1_5_SHA_384", messages[1]);
      const items: unknown[] = [
        { algorithm: "RSASSA_PSS_SHA_256", messageType: "RAW", message: messages[0].toBase64() },
        { algorithm: "RSASSA_PKCS1_V1_5_SHA_384", messageType: "DIGEST", message: digest.toBase64() },
        { algorithm: "RSASSA_PSS_SHA_256", messageType: "RAW", message: "not base64!" },
        { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: messages[3].toBase64() },
        { algorithm: "RSASSA_PKCS1_V1_5_SHA_256", messageType: "DIGEST", message: new Uint8Array(31).toBase64() },
        { algorithm: "RSASSA_PSS_SHA_512", messageType: "RAW", message: messages[5].toBase64(), extra: 1 },
        "not an object",
        { algorithm: "RSASSA_PSS_SHA_512", messageType: "RAW", message: messages[5].toBase64() },
        { algorithm: "RSASSA_PSS_SHA_256", messageType: "RAW", message: messages[0].toBase64(), signatureFormat: "RAW" },
      ];
      const res = await batch(t, rsa.id, { batch: items });
      assertEquals(res.status, 200);
      const { keyId, results } = await res.json();
      assertEquals(keyId, rsa.id);
      assertEquals(results.length, items.length);
      const codes = results.map((r: { error?: { code: string } }) => r.error?.code ?? "ok");
      assertEquals(codes, ["ok", "ok", "bad_request", "bad_request", "bad_request", "bad_request", "bad_request", "ok", "bad_request"]);
      assert(results[5].error.message.startsWith("batch.5"), results[5].error.message);
      assertEquals(results[3].error.message, "the algorithm is not valid for this key");

      const signature = (i: number) => Uint8Array.fromBase64(results[i].signature);
      const check = async (i: number, algorithm: AlgorithmName, message: Uint8Array<ArrayBuffer>) =>
        assert(await webCryptoVerify(rsa, algorithm, message, signature(i)), `item ${i}`);
      await check(0, "RSASSA_PSS_SHA_256", messages[0]);
      await check(7, "RSASSA_PSS_SHA_512", messages[5]);
      assertEquals(await opensslCheck(rsa, "RSASSA_PKCS1_V1_5_SHA_384", digest, signature(1)), undefined, "item 1, byte for byte");

      const record = t.audit.findLast((r) => r.route === "/v1/keys/:id/sign-batch")!;
      assertEquals([record.status, record.keyId], [200, rsa.id]);
      assertEquals(record.batch!.map((item) => item.error ?? item.algorithm), [
        "RSASSA_PSS_SHA_256",
        "RSASSA_PKCS1_V1_5_SHA_384",
        "bad_request",
        "bad_request",
        "bad_request",
        "bad_request",
        "bad_request",
        "RSASSA_PSS_SHA_512",
        "bad_request",
      ]);
      const sha256 = async (bytes: Uint8Array<ArrayBuffer>) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)).toHex();
      assertEquals(record.batch![0].messageSha256, await sha256(messages[0]));
      assertEquals(record.batch![1].messageSha256, await sha256(digest));
    } finally {
      await t.close();
    }
  });
}

Deno.test(`sign-batch: at most ${MAX_BATCH} items and the body limit in bytes; an unknown key or another key's scope fails the whole request`, async () => {
  const t = await open(16 * 1024);
  try {
    const item = { algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).toBase64() };
    const full = await batch(t, p256.id, { batch: Array(MAX_BATCH).fill(item) });
    assertEquals(full.status, 200);
    const { results } = await full.json();
    assertEquals(results.length, MAX_BATCH);
    assert(results.every((r: { signature?: string }) => typeof r.signature === "string"));
    const cases: [string, Promise<Response>, [number, string]][] = [
      ["one item too many", batch(t, p256.id, { batch: Array(MAX_BATCH + 1).fill(item) }), [400, "bad_request"]],
      ["empty", batch(t, p256.id, { batch: [] }), [400, "bad_request"]],
      ["not a list", batch(t, p256.id, { batch: item }), [400, "bad_request"]],
      ["a single sign body", batch(t, p256.id, item), [400, "bad_request"]],
      ["over the body limit", batch(t, p256.id, { batch: [{ ...item, messageType: "RAW", message: new Uint8Array(20_000).toBase64() }] }), [
        413,
        "too_large",
      ]],
      ["unknown key", batch(t, "ab".repeat(32), { batch: [item] }), [404, "key_not_found"]],
      ["scoped token, another key", batch(t, rsa.id, { batch: [item] }, SCOPED), [403, "forbidden"]],
      ["no token", batch(t, p256.id, { batch: [item] }, null), [401, "unauthorized"]],
    ];
    for (const [what, res, expected] of cases) assertEquals(await errorOf(await res), expected, what);
    assertEquals((await batch(t, p256.id, { batch: [item] }, SCOPED)).status, 200, "the scoped token, its own key");
  } finally {
    await t.close();
  }
});
