import * as jose from "jose";
import { assert, assertEquals, assertRejects } from "../../../test/_assert.ts";
import { errorOf, SCOPED, sealedApp, type TestApp } from "../../../test/_app.ts";
import { type FixtureKey, makeKeys } from "../../../test/_fixtures.ts";
import { tempDir } from "../../../test/_temp.ts";

// Every JWS and JWT keycell makes is checked by the jose package: with the key from
// `GET /v1/keys/{id}?format=jwk`, and through createRemoteJWKSet against a served
// /.well-known/jwks.json.

const root = await tempDir("keycell-jose-");
const keys = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"]);
const [rsa, p256, p384] = keys;
const ALGS: Record<string, string[]> = {
  RSA_2048: ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
  ECC_NIST_P256: ["ES256"],
  ECC_NIST_P384: ["ES384"],
};
const UTF8 = new TextEncoder();

/** The app over the fixture keys, all three published in the JWKS, served on a loopback port. */
async function served(): Promise<{ t: TestApp; jwks: ReturnType<typeof jose.createRemoteJWKSet>; close(): Promise<void> }> {
  const t = await sealedApp({ dir: await tempDir("keycell-jose-store-"), importKeysDir: `${root}/keys`, scopedKeys: [p256.id] });
  for (const key of keys) assertEquals((await t.request(`/v1/keys/${key.id}/jwks`, { method: "PUT" })).status, 204);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, t.app.fetch);
  const jwks = jose.createRemoteJWKSet(new URL(`http://127.0.0.1:${server.addr.port}/.well-known/jwks.json`));
  return {
    t,
    jwks,
    async close() {
      await server.shutdown();
      await t.close();
    },
  };
}

async function jwkOf(t: TestApp, key: FixtureKey): Promise<jose.JWK> {
  const res = await t.request(`/v1/keys/${key.id}?format=jwk`);
  assertEquals(res.status, 200);
  return await res.json();
}

async function post(t: TestApp, key: FixtureKey, route: "jws" | "jwt", json: unknown, token?: string): Promise<Response> {
  return await t.request(`/v1/keys/${key.id}/${route}`, { method: "POST", json, token });
}

Deno.test("jws: every alg on the keys it fits; jose verifies each with the key's JWK and with the served JWKS", async () => {
  const { t, jwks, close } = await served();
  try {
    for (const key of keys) {
      const jwk = await jwkOf(t, key);
      for (const alg of ALGS[key.keySpec]) {
        const payload = crypto.getRandomValues(new Uint8Array(alg.length * 11));
        const header = { alg, typ: "example+jws", cty: "application/octet-stream", "x-extra": [1, "two"] };
        const res = await post(t, key, "jws", { protectedHeader: header, payload: jose.base64url.encode(payload) });
        assertEquals(res.status, 200, `${key.keySpec} ${alg}`);
        const { jws } = await res.json();
        const viaJwk = await jose.compactVerify(jws, await jose.importJWK(jwk, alg));
        assertEquals(viaJwk.protectedHeader, { ...header, kid: key.id }, "the header as given, with kid added");
        assertEquals(new Uint8Array(viaJwk.payload), payload);
        const viaJwks = await jose.compactVerify(jws, jwks);
        assertEquals(new Uint8Array(viaJwks.payload), payload);
        // ECDSA in JOSE's fixed-width form: 64 bytes for ES256, 96 for ES384.
        const signature = jose.base64url.decode(jws.split(".")[2]);
        if (alg.startsWith("ES")) assertEquals(signature.length, alg === "ES256" ? 64 : 96);

        const tampered = `${jws.slice(0, -6)}${jws.endsWith("AAAAAA") ? "BBBBBB" : "AAAAAA"}`;
        await assertRejects(jose.compactVerify(tampered, await jose.importJWK(jwk, alg)));
      }
    }
  } finally {
    await close();
  }
});

Deno.test("jws: a kid given is kept, an empty payload signs, and the audit record names the algorithm and the signing input's hash", async () => {
  const { t, close } = await served();
  try {
    const res = await post(t, p256, "jws", { protectedHeader: { alg: "ES256", kid: "my-key" }, payload: "" });
    assertEquals(res.status, 200);
    const { jws } = await res.json();
    assertEquals(jose.decodeProtectedHeader(jws).kid, "my-key");
    const { payload } = await jose.compactVerify(jws, await jose.importJWK(await jwkOf(t, p256), "ES256"));
    assertEquals(payload.length, 0);
    const record = t.audit.findLast((r) => r.route === "/v1/keys/:id/jws")!;
    const signingInput = jws.slice(0, jws.lastIndexOf("."));
    assertEquals([record.keyId, record.algorithm], [p256.id, "ECDSA_SHA_256"]);
    assertEquals(record.messageSha256, new Uint8Array(await crypto.subtle.digest("SHA-256", UTF8.encode(signingInput))).toHex());
  } finally {
    await close();
  }
});

Deno.test("jws: an alg the key does not fit, a header or payload JOSE would refuse, another key's scope: refused", async () => {
  const { t, close } = await served();
  try {
    const payload = jose.base64url.encode("hello");
    const cases: [string, FixtureKey, unknown, [number, string], string?][] = [
      ["no alg", p256, { protectedHeader: { typ: "JWT" }, payload }, [400, "bad_request"]],
      ["alg none", p256, { protectedHeader: { alg: "none" }, payload }, [400, "bad_request"]],
      ["alg HS256", p256, { protectedHeader: { alg: "HS256" }, payload }, [400, "bad_request"]],
      ["alg not a string", p256, { protectedHeader: { alg: 256 }, payload }, [400, "bad_request"]],
      ["alg from the prototype", p256, { protectedHeader: { alg: "toString" }, payload }, [400, "bad_request"]],
      ["ES256 on P-384", p384, { protectedHeader: { alg: "ES256" }, payload }, [400, "bad_request"]],
      ["ES384 on P-256", p256, { protectedHeader: { alg: "ES384" }, payload }, [400, "bad_request"]],
      ["RS256 on an EC key", p256, { protectedHeader: { alg: "RS256" }, payload }, [400, "bad_request"]],
      ["PS256 on an EC key", p384, { protectedHeader: { alg: "PS256" }, payload }, [400, "bad_request"]],
      ["ES256 on RSA", rsa, { protectedHeader: { alg: "ES256" }, payload }, [400, "bad_request"]],
      ["kid not a string", p256, { protectedHeader: { alg: "ES256", kid: 7 }, payload }, [400, "bad_request"]],
      ["unencoded payload", p256, { protectedHeader: { alg: "ES256", b64: false, crit: ["b64"] }, payload }, [400, "bad_request"]],
      ["header an array", p256, { protectedHeader: ["ES256"], payload }, [400, "bad_request"]],
      ["payload padded", p256, { protectedHeader: { alg: "ES256" }, payload: "aGk=" }, [400, "bad_request"]],
      ["payload standard base64", p256, { protectedHeader: { alg: "ES256" }, payload: "+/8" }, [400, "bad_request"]],
      ["payload missing", p256, { protectedHeader: { alg: "ES256" } }, [400, "bad_request"]],
      ["unknown field", p256, { protectedHeader: { alg: "ES256" }, payload, detached: true }, [400, "bad_request"]],
      ["scoped token, another key", p384, { protectedHeader: { alg: "ES384" }, payload }, [403, "forbidden"], SCOPED],
    ];
    for (const [what, key, body, expected, token] of cases) {
      assertEquals(await errorOf(await post(t, key, "jws", body, token)), expected, what);
    }
    assertEquals((await post(t, p256, "jws", { protectedHeader: { alg: "ES256" }, payload }, SCOPED)).status, 200, "its own key");
    const unknown = await t.request(`/v1/keys/${"ab".repeat(32)}/jws`, {
      method: "POST",
      json: { protectedHeader: { alg: "ES256" }, payload },
    });
    assertEquals(await errorOf(unknown), [404, "key_not_found"]);
  } finally {
    await close();
  }
});

Deno.test("jwt: the key's default alg or the one asked for, iat and exp set; jwtVerify accepts it through the served JWKS", async () => {
  const { t, jwks, close } = await served();
  try {
    const claims = { sub: "user-7", aud: "example-api", iss: "https://issuer.example", scope: ["read", "write"], nested: { a: 1 } };
    for (
      const [key, asked, expected] of [
        [p256, undefined, "ES256"],
        [p384, undefined, "ES384"],
        [rsa, undefined, "RS256"],
        [rsa, "PS512", "PS512"],
        [rsa, "RS384", "RS384"],
      ] as const
    ) {
      const before = Math.floor(Date.now() / 1000);
      const res = await post(t, key, "jwt", { claims, expiresIn: 600, ...(asked ? { alg: asked } : {}) });
      assertEquals(res.status, 200, `${key.keySpec} ${asked}`);
      const { jwt } = await res.json();
      const { payload, protectedHeader } = await jose.jwtVerify(jwt, jwks, {
        issuer: claims.iss,
        audience: claims.aud,
        algorithms: [expected],
      });
      assertEquals(protectedHeader, { alg: expected, typ: "JWT", kid: key.id });
      assertEquals({ ...payload, iat: undefined, exp: undefined }, { ...claims, iat: undefined, exp: undefined });
      assert(payload.iat! >= before && payload.iat! <= Math.floor(Date.now() / 1000) + 1, `iat ${payload.iat}`);
      assertEquals(payload.exp, payload.iat! + 600);
    }

    // Without expiresIn: no exp unless the claims carry one, which jose then checks.
    const noExp = await (await post(t, p256, "jwt", { claims: { sub: "x" } })).json();
    assertEquals((await jose.jwtVerify(noExp.jwt, jwks)).payload.exp, undefined);
    const expired = await (await post(t, p256, "jwt", { claims: { sub: "x", exp: 1_000_000_000, iat: 5 } })).json();
    await assertRejects(jose.jwtVerify(expired.jwt, jwks), jose.errors.JWTExpired);
    assert(jose.decodeJwt(expired.jwt).iat! > 5, "iat is the time of signing, whatever the claims said");
  } finally {
    await close();
  }
});

Deno.test("jwt: bad claims, expiresIn or alg are 400; another key's scope 403", async () => {
  const { t, close } = await served();
  try {
    const cases: [string, FixtureKey, unknown, [number, string], string?][] = [
      ["exp and expiresIn", p256, { claims: { exp: 2_000_000_000 }, expiresIn: 60 }, [400, "bad_request"]],
      ["expiresIn 0", p256, { claims: {}, expiresIn: 0 }, [400, "bad_request"]],
      ["expiresIn fractional", p256, { claims: {}, expiresIn: 1.5 }, [400, "bad_request"]],
      ["expiresIn too large", p256, { claims: {}, expiresIn: Number.MAX_SAFE_INTEGER }, [400, "bad_request"]],
      ["claims an array", p256, { claims: [1] }, [400, "bad_request"]],
      ["claims a string", p256, { claims: "sub" }, [400, "bad_request"]],
      ["no claims", p256, {}, [400, "bad_request"]],
      ["alg of another curve", p256, { claims: {}, alg: "ES384" }, [400, "bad_request"]],
      ["alg of another family", rsa, { claims: {}, alg: "ES256" }, [400, "bad_request"]],
      ["alg unknown", rsa, { claims: {}, alg: "HS256" }, [400, "bad_request"]],
      ["scoped token, another key", rsa, { claims: {} }, [403, "forbidden"], SCOPED],
    ];
    for (const [what, key, body, expected, token] of cases) {
      assertEquals(await errorOf(await post(t, key, "jwt", body, token)), expected, what);
    }
    assertEquals((await post(t, p256, "jwt", { claims: {} }, SCOPED)).status, 200, "its own key");
  } finally {
    await close();
  }
});

Deno.test("GET /v1/keys/{id}?format=jwk: the JWK jose exports from the same SPKI, with kid, use and (EC) alg", async () => {
  const { t, close } = await served();
  try {
    for (const key of keys) {
      const alg = ALGS[key.keySpec][0];
      const pem = await Deno.readTextFile(key.publicPath);
      const expected = await jose.exportJWK(await jose.importSPKI(pem, alg, { extractable: true }));
      const jwk = await jwkOf(t, key);
      assertEquals(jwk, { ...expected, use: "sig", kid: key.id, ...(key.keySpec === "RSA_2048" ? {} : { alg }) });
      assertEquals(await jose.calculateJwkThumbprint(jwk), await jose.calculateJwkThumbprint(expected));
    }
    assertEquals(await errorOf(await t.request(`/v1/keys/${p256.id}?format=der`)), [400, "bad_request"]);
    assertEquals(await errorOf(await t.request(`/v1/keys/${p384.id}?format=jwk`, { token: SCOPED })), [403, "forbidden"]);
    assertEquals((await t.request(`/v1/keys/${p256.id}`)).status, 200, "without format: the usual key");
  } finally {
    await close();
  }
});
