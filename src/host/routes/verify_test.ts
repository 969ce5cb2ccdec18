import { assert, assertEquals } from "../../../test/_assert.ts";
import { errorOf, SCOPED, sealedApp, type TestApp } from "../../../test/_app.ts";
import { makeKeys } from "../../../test/_fixtures.ts";
import { tempDir } from "../../../test/_temp.ts";
import { ALGORITHM_DETAILS, algorithmsFor, digestFor, ecdsaDerToRaw, opensslVerify } from "../../../test/_verify.ts";

const root = await tempDir("keycell-verify-route-");
const keys = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"]);
const [rsa, p256, p384] = keys;
const message = new TextEncoder().encode("keycell verifies this message");

async function open(): Promise<TestApp> {
  return await sealedApp({ dir: await tempDir("keycell-verify-store-"), importKeysDir: `${root}/keys`, scopedKeys: [p256.id] });
}

async function signed(t: TestApp, id: string, body: Record<string, unknown>): Promise<Uint8Array> {
  const res = await t.request(`/v1/keys/${id}/sign`, { method: "POST", json: body });
  assertEquals(res.status, 200, JSON.stringify(body));
  return Uint8Array.fromBase64((await res.json()).signature);
}

async function verified(
  t: TestApp,
  id: string,
  body: Record<string, unknown>,
  token?: string,
): Promise<boolean | [number, string | undefined]> {
  const res = await t.request(`/v1/keys/${id}/verify`, { method: "POST", json: body, token });
  if (res.status !== 200) return await errorOf(res);
  const json = await res.json();
  assertEquals(Object.keys(json), ["valid"]);
  return json.valid;
}

Deno.test("verify: every algorithm of every key family, RAW and DIGEST, DER and RAW signatures: true for keycell's signatures, false once changed", async () => {
  const t = await open();
  try {
    for (const key of keys) {
      for (const algorithm of algorithmsFor(key.keySpec)) {
        const ecdsa = ALGORITHM_DETAILS[algorithm].scheme === "ECDSA";
        const digest = await digestFor(algorithm, message);
        for (const signatureFormat of ecdsa ? ["DER", "RAW"] : [undefined]) {
          const format = signatureFormat === undefined ? {} : { signatureFormat };
          const what = `${key.keySpec} ${algorithm} ${signatureFormat ?? ""}`;
          const raw = { algorithm, messageType: "RAW", message: message.toBase64(), ...format };
          const byDigest = { algorithm, messageType: "DIGEST", message: digest.toBase64(), ...format };
          const signature = await signed(t, key.id, raw);
          // The same signature, whether the message or its digest is given.
          assertEquals(await verified(t, key.id, { ...raw, signature: signature.toBase64() }), true, `${what} RAW`);
          assertEquals(await verified(t, key.id, { ...byDigest, signature: signature.toBase64() }), true, `${what} DIGEST`);
          const fromDigest = await signed(t, key.id, byDigest);
          assertEquals(await verified(t, key.id, { ...raw, signature: fromDigest.toBase64() }), true, `${what} signed as DIGEST`);

          const flipped = signature.slice();
          flipped[signature.length - 5] ^= 0x10;
          assertEquals(await verified(t, key.id, { ...raw, signature: flipped.toBase64() }), false, `${what} flipped`);
          const other = new TextEncoder().encode("another message").toBase64();
          assertEquals(
            await verified(t, key.id, { ...raw, message: other, signature: signature.toBase64() }),
            false,
            `${what} other message`,
          );
          const otherDigest = digest.slice();
          otherDigest[0] ^= 1;
          assertEquals(
            await verified(t, key.id, { ...byDigest, message: otherDigest.toBase64(), signature: signature.toBase64() }),
            false,
            `${what} other digest`,
          );
        }
      }
    }
  } finally {
    await t.close();
  }
});

Deno.test("verify: the answer agrees with openssl on signatures keycell did not make", async () => {
  const t = await open();
  try {
    // A signature made by openssl with the fixture's private key file.
    const digest = await digestFor("ECDSA_SHA_384", message);
    const out = await new Deno.Command("openssl", {
      args: ["pkeyutl", "-sign", "-inkey", p384.path, "-pkeyopt", "digest:sha384"],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const writer = out.stdin.getWriter();
    await writer.write(digest);
    await writer.close();
    const der = (await out.output()).stdout;
    assert(await opensslVerify(p384.spki, { scheme: "ecdsa", hash: "sha384" }, digest, der));
    const body = { algorithm: "ECDSA_SHA_384", messageType: "DIGEST", message: digest.toBase64() };
    assertEquals(await verified(t, p384.id, { ...body, signature: der.toBase64() }), true, "openssl's DER signature");
    const raw = ecdsaDerToRaw(der, 48);
    assertEquals(await verified(t, p384.id, { ...body, signatureFormat: "RAW", signature: raw.toBase64() }), true, "as r || s");
    assertEquals(await verified(t, p256.id, { ...body, algorithm: "ECDSA_SHA_384", signature: der.toBase64() }), false, "another key's");
  } finally {
    await t.close();
  }
});

Deno.test("verify: a malformed signature is valid: false; bad fields are 400, an unknown key 404, another key's scope 403", async () => {
  const t = await open();
  try {
    const ec = { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: message.toBase64() };
    const pss = { ...ec, algorithm: "RSASSA_PSS_SHA_256" };
    for (
      const [what, body, key] of [
        ["empty", { ...ec, signature: "" }, p256],
        ["garbage DER", { ...ec, signature: new Uint8Array(70).fill(7).toBase64() }, p256],
        ["r || s of the wrong width", { ...ec, signatureFormat: "RAW", signature: new Uint8Array(63).fill(1).toBase64() }, p256],
        ["RSA signature too short", { ...pss, signature: new Uint8Array(255).fill(1).toBase64() }, rsa],
        ["RSA signature of zeros", { ...pss, signature: new Uint8Array(256).toBase64() }, rsa],
      ] as const
    ) {
      assertEquals(await verified(t, key.id, body), false, what);
    }
    const good = { ...ec, signature: (await signed(t, p256.id, ec)).toBase64() };
    const cases: [string, string, Record<string, unknown>, [number, string], string?][] = [
      ["signature not base64", p256.id, { ...good, signature: "not base64!" }, [400, "bad_request"]],
      ["message not base64", p256.id, { ...good, message: "AQI" }, [400, "bad_request"]],
      ["no signature", p256.id, ec, [400, "bad_request"]],
      ["digest of the wrong length", p256.id, { ...good, messageType: "DIGEST", message: new Uint8Array(31).toBase64() }, [
        400,
        "bad_request",
      ]],
      ["RSA algorithm on an EC key", p256.id, { ...good, algorithm: "RSASSA_PSS_SHA_256" }, [400, "bad_request"]],
      ["ECDSA on an RSA key", rsa.id, good, [400, "bad_request"]],
      ["signatureFormat with RSA", rsa.id, { ...pss, signatureFormat: "RAW", signature: good.signature }, [400, "bad_request"]],
      ["unknown field", p256.id, { ...good, extra: true }, [400, "bad_request"]],
      ["unknown key", "ab".repeat(32), good, [404, "key_not_found"]],
      ["malformed key id", "xyz", good, [404, "key_not_found"]],
      ["scoped token, its own key", p256.id, good, [200, "valid"], SCOPED],
      ["scoped token, another key", p384.id, { ...good, algorithm: "ECDSA_SHA_384" }, [403, "forbidden"], SCOPED],
    ];
    for (const [what, id, body, expected, token] of cases) {
      const got = await verified(t, id, body, token);
      assertEquals(got === true ? [200, "valid"] : got, expected, what);
    }
    const unauthenticated = await t.request(`/v1/keys/${p256.id}/verify`, { method: "POST", json: good, token: null });
    assertEquals(await errorOf(unauthenticated), [401, "unauthorized"]);
    const record = t.audit.findLast((r) => r.route === "/v1/keys/:id/verify" && r.status === 200)!;
    assertEquals([record.keyId, record.algorithm], [p256.id, "ECDSA_SHA_256"]);
    assertEquals(record.messageSha256, new Uint8Array(await crypto.subtle.digest("SHA-256", message)).toHex());
  } finally {
    await t.close();
  }
});
