import * as jose from "jose";
import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { ADMIN, sealedApp } from "../../test/_app.ts";
import { tempDir } from "../../test/_temp.ts";
import { KeycellError } from "../core/errors.ts";
import { KeycellClient } from "./client.ts";

Deno.test("client: verify, sign-batch, JWS, JWT, a key's JWK and the JWKS against the app", async () => {
  const dir = await tempDir("keycell-client-");
  const t = await sealedApp({ dir });
  const inProcess: typeof fetch = (input, init) => Promise.resolve(t.app.fetch(new Request(input, init)));
  const client = new KeycellClient({ url: "http://keycell.test", token: ADMIN, fetch: inProcess });
  try {
    const published = await client.createKey("ECC_NIST_P256", { jwks: true });
    const rsa = await client.createKey("RSA_2048");
    assertEquals((await client.jwks()).keys.map((k) => k.kid), [published.id]);
    await client.setJwks(rsa.id, true);
    assertEquals((await client.jwks()).keys.map((k) => k.kid).sort(), [published.id, rsa.id].sort());
    await client.setJwks(rsa.id, false);
    assertEquals((await client.jwks()).keys.map((k) => k.kid), [published.id]);
    const jwk = await client.getJwk(published.id);
    assertEquals([jwk.kid, jwk.kty, jwk.crv, jwk.alg], [published.id, "EC", "P-256", "ES256"]);

    const message = new TextEncoder().encode("checked by the server");
    const signature = await client.sign(published.id, { algorithm: "ECDSA_SHA_256", message });
    assert(await client.verify(published.id, { algorithm: "ECDSA_SHA_256", message, signature }));
    assert(!await client.verify(published.id, { algorithm: "ECDSA_SHA_256", message: new TextEncoder().encode("other"), signature }));

    const batch = await client.signBatch(rsa.id, [
      { algorithm: "RSASSA_PSS_SHA_256", message },
      { algorithm: "ECDSA_SHA_256", message },
      { algorithm: "RSASSA_PKCS1_V1_5_SHA_256", message },
    ]);
    assertEquals(batch.length, 3);
    assert("signature" in batch[0] && "signature" in batch[2]);
    assert("error" in batch[1] && batch[1].error instanceof KeycellError && batch[1].error.code === "bad_request", "an item fails alone");
    assert(await client.verify(rsa.id, { algorithm: "RSASSA_PKCS1_V1_5_SHA_256", message, signature: batch[2].signature }));

    const keySet = jose.createLocalJWKSet((await client.jwks()) as jose.JSONWebKeySet);
    const jws = await client.jws(published.id, { alg: "ES256", typ: "JOSE" }, "hello");
    const verified = await jose.compactVerify(jws, keySet);
    assertEquals([new TextDecoder().decode(verified.payload), verified.protectedHeader.kid], ["hello", published.id]);
    const jwt = await client.jwt(published.id, { sub: "user-7" }, { expiresIn: 600 });
    const { payload } = await jose.jwtVerify(jwt, keySet);
    assertEquals([payload.sub, payload.exp! - payload.iat!], ["user-7", 600]);
    await assertRejects(() => client.jwt(published.id, { sub: "x" }, { alg: "ES384" }), (err) => err instanceof KeycellError && err.code === "bad_request");
  } finally {
    await t.close();
    await Deno.remove(dir, { recursive: true });
  }
});
