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

/** A signature openssl makes over `digest` with the key file at `path`, with `-pkeyopt` options. */
async function opensslSigned(path: string, digest: Uint8Array, options: readonly string[]): Promise<Uint8Array> {
  const child = new Deno.Command("openssl", {
    args: ["pkeyutl", "-sign", "-inkey", path, ...options.flatMap((option) => ["-pkeyopt", option])],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(digest);
  await writer.close();
  const { success, stdout } = await child.output();
  assert(success, `openssl pkeyutl ${options.join(" ")}`);
  return stdout;
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
    // Signatures made by openssl with the fixtures' private key files.
    const digest = await digestFor("ECDSA_SHA_384", message);
    const der = await opensslSigned(p384.path, digest, ["digest:sha384"]);
    assert(await opensslVerify(p384.spki, { scheme: "ecdsa", hash: "sha384" }, digest, der));
    const body = { algorithm: "ECDSA_SHA_384", messageType: "DIGEST", message: digest.toBase64() };
    assertEquals(await verified(t, p384.id, { ...body, signature: der.toBase64() }), true, "openssl's DER signature");
    const raw = ecdsaDerToRaw(der, 48);
    assertEquals(await verified(t, p384.id, { ...body, signatureFormat: "RAW", signature: raw.toBase64() }), true, "as r || s");
    assertEquals(await verified(t, p256.id, { ...body, algorithm: "ECDSA_SHA_384", signature: der.toBase64() }), false, "another key's");

    const sha256 = await digestFor("RSASSA_PSS_SHA_256", message);
    const rsaCases = [
      ["RSASSA_PKCS1_V1_5_SHA_256", ["digest:sha256"]],
      ["RSASSA_PSS_SHA_256", ["digest:sha256", "rsa_padding_mode:pss", "rsa_pss_saltlen:32"]],
    ] as const;
    for (const [algorithm, options] of rsaCases) {
      const signature = (await opensslSigned(rsa.path, sha256, options)).toBase64();
      const byDigest = { algorithm, messageType: "DIGEST", message: sha256.toBase64(), signature };
      assertEquals(await verified(t, rsa.id, byDigest), true, `openssl's ${algorithm} over the digest`);
      assertEquals(await verified(t, rsa.id, { ...byDigest, messageType: "RAW", message: message.toBase64() }), true, `${algorithm} over the message`);
    }
    // PSS with another salt length is not what keycell signs or accepts.
    const salt20 = (await opensslSigned(rsa.path, sha256, ["digest:sha256", "rsa_padding_mode:pss", "rsa_pss_saltlen:20"])).toBase64();
    assertEquals(
      await verified(t, rsa.id, { algorithm: "RSASSA_PSS_SHA_256", messageType: "DIGEST", message: sha256.toBase64(), signature: salt20 }),
      false,
      "PSS with a 20-byte salt",
    );
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
        ["RSA signature longer than any key's", { ...pss, signature: new Uint8Array(40_000).fill(1).toBase64() }, rsa],
      ] as const
    ) {
      assertEquals(await verified(t, key.id, body), false, what);
    }
    const der = await signed(t, p256.id, ec);
    const rs = ecdsaDerToRaw(der, 32);
    const n = Uint8Array.fromHex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    const [r, s] = [rs.subarray(0, 32), rs.subarray(32)];
    const malformed: [string, Uint8Array, "DER" | "RAW"][] = [
      ["r = 0", new Uint8Array([...new Uint8Array(32), ...s]), "RAW"],
      ["s = 0", new Uint8Array([...r, ...new Uint8Array(32)]), "RAW"],
      ["r = n", new Uint8Array([...n, ...s]), "RAW"],
      ["s = n", new Uint8Array([...r, ...n]), "RAW"],
      ["r || s one byte long", new Uint8Array([...rs, 0]), "RAW"],
      ["DER not a SEQUENCE", Uint8Array.of(0x31, ...der.subarray(1)), "DER"],
      ["DER with a trailing byte", new Uint8Array([...der, 0]), "DER"],
      ["DER cut short", der.subarray(0, der.length - 1), "DER"],
      ["r || s given as DER", rs, "DER"],
    ];
    for (const [what, signature, signatureFormat] of malformed) {
      assertEquals(await verified(t, p256.id, { ...ec, signatureFormat, signature: signature.toBase64() }), false, what);
    }
    // A high s (n - s) is the same signature to ECDSA: valid, as for openssl and WebCrypto.
    const highS = Uint8Array.fromHex((BigInt(`0x${n.toHex()}`) - BigInt(`0x${s.toHex()}`)).toString(16).padStart(64, "0"));
    assertEquals(await verified(t, p256.id, { ...ec, signatureFormat: "RAW", signature: new Uint8Array([...r, ...highS]).toBase64() }), true);
    const good = { ...ec, signature: der.toBase64() };
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
