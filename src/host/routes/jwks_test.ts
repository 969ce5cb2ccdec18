import * as jose from "jose";
import { assert, assertEquals } from "../../../test/_assert.ts";
import { ADMIN, errorOf, requestTo, SCOPED, sealedApp, type TestApp } from "../../../test/_app.ts";
import { makeKeys } from "../../../test/_fixtures.ts";
import { tempDir } from "../../../test/_temp.ts";
import { WASM } from "../../../test/_wasm.ts";
import { createApp } from "../app.ts";
import { sha256Hex, TokenStore } from "../auth.ts";
import { ProcessKeyService } from "../../deno/process_transport.ts";
import { startSigner } from "../../deno/signer.ts";
import { markJwks, MAX_JWKS_KEYS } from "../../core/jwks_set.ts";
import { SqliteKeyStore } from "../../deno/store/sqlite.ts";

const root = await tempDir("keycell-jwks-");
const keys = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256"]);
const [rsa, p256] = keys;

async function published(t: { request: TestApp["request"] }): Promise<string[]> {
  const res = await t.request("/.well-known/jwks.json", { token: null });
  assertEquals(res.status, 200);
  assertEquals(res.headers.get("Cache-Control"), "public, max-age=300");
  return ((await res.json()).keys as jose.JWK[]).map((k) => k.kid!);
}

Deno.test("jwks.json: no token needed; PUT and DELETE (full scope only) put keys in and take them out; a key made with jwks: true is in at once", async () => {
  const t = await sealedApp({ dir: await tempDir("keycell-jwks-store-"), importKeysDir: `${root}/keys`, scopedKeys: [p256.id] });
  try {
    assertEquals(await published(t), [], "nothing is published unless marked");
    assertEquals((await t.request(`/v1/keys/${p256.id}/jwks`, { method: "PUT" })).status, 204);
    assertEquals(await published(t), [p256.id]);
    assertEquals((await t.request(`/v1/keys/${p256.id}/jwks`, { method: "PUT" })).status, 204, "marking twice is no error");

    assertEquals(await errorOf(await t.request(`/v1/keys/${rsa.id}/jwks`, { method: "PUT", token: SCOPED })), [403, "forbidden"]);
    assertEquals(
      await errorOf(await t.request(`/v1/keys/${p256.id}/jwks`, { method: "DELETE", token: SCOPED })),
      [403, "forbidden"],
      "even its own key",
    );
    assertEquals(await errorOf(await t.request(`/v1/keys/${rsa.id}/jwks`, { method: "PUT", token: null })), [401, "unauthorized"]);
    assertEquals(await errorOf(await t.request(`/v1/keys/${"ab".repeat(32)}/jwks`, { method: "PUT" })), [404, "key_not_found"]);
    assertEquals(await errorOf(await t.request(`/v1/keys/${"ab".repeat(32)}/jwks`, { method: "DELETE" })), [404, "key_not_found"]);
    assertEquals(await errorOf(await t.request(`/v1/keys/${rsa.id}/jwks`, { method: "POST" })), [405, "method_not_allowed"]);

    const made = await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P384", jwks: true } });
    assertEquals(made.status, 201);
    const key = await made.json();
    assertEquals(key.jwks, true);
    assertEquals(await published(t), [p256.id, key.id].sort());
    const plain = await (await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", jwks: false } })).json();
    assertEquals(plain.jwks, undefined);
    assertEquals((await published(t)).length, 2, "jwks: false publishes nothing");

    assertEquals((await t.request(`/v1/keys/${p256.id}/jwks`, { method: "DELETE" })).status, 204);
    assertEquals(await published(t), [key.id]);
    assertEquals((await t.request(`/v1/keys/${key.id}?immediately=true`, { method: "DELETE" })).status, 204);
    assertEquals(await published(t), [], "a deleted key leaves the JWKS");

    // By name: the primary is published; a rotation publishes the new version beside it; deleting the name takes out both.
    const named = await (await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", name: "tokens" } })).json();
    assertEquals((await t.request("/v1/keys/tokens/jwks", { method: "PUT" })).status, 204);
    assertEquals(await published(t), [named.id]);
    const rotated = await (await t.request("/v1/keys/tokens/rotate", { method: "POST" })).json();
    assertEquals(await published(t), [named.id, rotated.primary].sort());
    assertEquals((await t.request("/v1/keys/tokens?immediately=true", { method: "DELETE" })).status, 204);
    assertEquals(await published(t), []);
    assertEquals(await t.signer.jwksKeyIds(), [], "and the set in the store");

    const record = t.audit.findLast((r) => r.method === "GET" && r.route === "/.well-known/jwks.json")!;
    assertEquals([record.status, record.token], [200, undefined], "jwks.json is audited, with no token");
  } finally {
    await t.close();
  }
});

Deno.test("jwks.json: the set survives a restart on the same store, and the JWKs verify what the keys sign", async () => {
  const dir = await tempDir("keycell-jwks-restart-");
  const first = await sealedApp({ dir, importKeysDir: `${root}/keys` });
  let generated: string;
  try {
    for (const key of keys) assertEquals((await first.request(`/v1/keys/${key.id}/jwks`, { method: "PUT" })).status, 204);
    generated = (await (await first.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", jwks: true } })).json()).id;
  } finally {
    await first.close();
  }
  const second = await sealedApp({ dir });
  try {
    assertEquals(await published(second), [rsa.id, p256.id, generated].sort());
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, second.app.fetch);
    try {
      const jwks = jose.createRemoteJWKSet(new URL(`http://127.0.0.1:${server.addr.port}/.well-known/jwks.json`));
      for (const id of [rsa.id, generated]) {
        const res = await second.request(`/v1/keys/${id}/jwt`, { method: "POST", json: { claims: { sub: "restart" } } });
        assertEquals((await jose.jwtVerify((await res.json()).jwt, jwks)).payload.sub, "restart");
      }
    } finally {
      await server.shutdown();
    }
  } finally {
    await second.close();
  }
});

Deno.test("jwks: a full set takes no more keys (400) and generates none; ids whose keys are gone are not published", async () => {
  const dir = await tempDir("keycell-jwks-full-");
  // A full set of ids alone, as if their keys had been deleted by another node meanwhile.
  const ids = Array.from({ length: MAX_JWKS_KEYS }, (_, i) => i.toString(16).padStart(64, "0"));
  const direct = SqliteKeyStore.open(`${dir}/keys.db`);
  try {
    for (const id of ids) await markJwks(direct, id, true);
  } finally {
    await direct.close();
  }
  const t = await sealedApp({ dir });
  try {
    assertEquals(await published(t), [], "ids without keys are not published");
    const count = async () => (await (await t.request("/v1/keys")).json()).keys.length;
    assertEquals(await errorOf(await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", jwks: true } })), [
      400,
      "bad_request",
    ]);
    assertEquals(await count(), 0, "no key was made");
    const key = (await (await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256" } })).json()).id;
    const full = await t.request(`/v1/keys/${key}/jwks`, { method: "PUT" });
    assertEquals([full.status, (await full.json()).error.message], [
      400,
      `the JWKS holds at most ${MAX_JWKS_KEYS} keys; take one out first`,
    ]);
    assertEquals(
      await errorOf(await t.request(`/v1/keys/${ids[0]}/jwks`, { method: "DELETE" })),
      [404, "key_not_found"],
      "an id without a key",
    );
    assertEquals((await t.signer.jwksKeyIds()).includes(ids[0]), false, "is taken out all the same");
    assertEquals((await t.request(`/v1/keys/${key}/jwks`, { method: "PUT" })).status, 204, "room again");
    assertEquals(await published(t), [key]);
  } finally {
    await t.close();
  }
});

Deno.test("jwks without a key store (keys from files only): jwks.json is empty, marking routes do not exist, jwks: true is 400", async () => {
  const { client } = await startSigner("inline", { wasm: WASM, keysDir: `${root}/keys` });
  try {
    const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
    const app = createApp({ signer: client, tokens });
    const request: TestApp["request"] = (path, init) => requestTo(app, path, init);
    assertEquals(await published({ request }), []);
    assertEquals(await errorOf(await request(`/v1/keys/${p256.id}/jwks`, { method: "PUT" })), [404, "not_found"]);
    assertEquals(await errorOf(await request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", jwks: true } })), [
      400,
      "bad_request",
    ]);
    assertEquals((await client.listKeys()).length, keys.length, "no key was made");
    const jwk = await (await request(`/v1/keys/${p256.id}?format=jwk`)).json();
    assertEquals([jwk.kid, jwk.kty, jwk.crv], [p256.id, "EC", "P-256"], "a key's JWK needs no store");
  } finally {
    await client.close();
  }
});

Deno.test("process mode: the JWKS set lives in the key server's store, reached through the key-service RPC", async () => {
  const client = await ProcessKeyService.start();
  try {
    const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
    const app = createApp({ signer: client, keys: client, tokens });
    const request: TestApp["request"] = (path, init) => requestTo(app, path, init);
    const made = await (await request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", jwks: true } })).json();
    const other = await (await request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P384" } })).json();
    assertEquals(await published({ request }), [made.id]);
    assertEquals((await request(`/v1/keys/${other.id}/jwks`, { method: "PUT" })).status, 204);
    assertEquals(await published({ request }), [made.id, other.id].sort());
    assertEquals((await request(`/v1/keys/${made.id}/jwks`, { method: "DELETE" })).status, 204);
    assertEquals(await published({ request }), [other.id]);
    assertEquals(await errorOf(await request(`/v1/keys/${"cd".repeat(32)}/jwks`, { method: "PUT" })), [404, "key_not_found"]);
    const jwt = (await (await request(`/v1/keys/${other.id}/jwt`, { method: "POST", json: { claims: { sub: "p" } } })).json()).jwt;
    const jwks = (await (await request("/.well-known/jwks.json", { token: null })).json()) as jose.JSONWebKeySet;
    assertEquals((await jose.jwtVerify(jwt, jose.createLocalJWKSet(jwks))).protectedHeader.alg, "ES384");
    assert(jwks.keys.every((k) => k.use === "sig"));
  } finally {
    await client.close();
  }
});
