import { assert, assertEquals } from "../../test/_assert.ts";
import {
  ALGORITHM_DETAILS,
  algorithmsFor,
  digestFor,
  type FixtureKey,
  makeKeys,
  opensslCheck,
  webCryptoVerify,
} from "../../test/_fixtures.ts";
import { createApp } from "./app.ts";
import { sha256Hex, TokenStore } from "./auth.ts";
import { toHex } from "../core/protocol.ts";
import { Metrics } from "./metrics.ts";
import type { AuditRecord } from "./audit.ts";
import { type SignerClient, type SignerMode, startSigner } from "../deno/signer.ts";
import { ProcessKeyService } from "../deno/process_transport.ts";
import { tempDir } from "../../test/_temp.ts";
import { WASM } from "../../test/_wasm.ts";
import { ADMIN, requestTo, SCOPED, type TestRequest } from "../../test/_app.ts";

/** A signer in `mode` over the keys of `keysDir`; in `process` mode, a key server's whole key service. */
async function startClient(mode: SignerMode, keysDir: string): Promise<SignerClient> {
  return mode === "process" ? await ProcessKeyService.start({ keysDir }) : (await startSigner(mode, { wasm: WASM, keysDir })).client;
}

interface Harness {
  keys: FixtureKey[];
  client: SignerClient;
  request(path: string, init?: TestRequest): Promise<Response>;
}

async function harness(
  mode: SignerMode,
  keys: FixtureKey[],
  keysDir: string,
  options: { signer?: SignerClient; maxInFlight?: number } = {},
): Promise<Harness> {
  const client = await startClient(mode, keysDir);
  const p256 = keys.find((k) => k.keySpec === "ECC_NIST_P256")!;
  const tokens = TokenStore.fromEntries([
    { name: "admin", sha256: sha256Hex(ADMIN), keys: "*" },
    { name: "scoped", sha256: sha256Hex(SCOPED), keys: [p256.id] },
  ]);
  const app = createApp({ signer: options.signer ?? client, tokens, maxBodyBytes: 4096, maxInFlight: options.maxInFlight });
  return {
    keys,
    client,
    request: (path, init) => requestTo(app, path, init),
  };
}

async function errorOf(res: Response): Promise<{ status: number; code: string; message: string }> {
  const body = await res.json();
  return { status: res.status, code: body.error?.code, message: body.error?.message };
}

const root = await tempDir("keycell-app-");
const keys = await makeKeys(root);
const keysDir = `${root}/keys`;
const message = new TextEncoder().encode("keycell signs this message");

for (const mode of ["inline", "worker", "process"] as const) {
  Deno.test(`${mode}: every key is listed with its id, spec and public key`, async () => {
    const h = await harness(mode, keys, keysDir);
    try {
      const res = await h.request("/v1/keys");
      assertEquals(res.status, 200);
      const listed = (await res.json()).keys as { id: string; keySpec: string; publicKey: string }[];
      const byId = new Map(listed.map((k) => [k.id, k]));
      assertEquals(listed.length, keys.length);
      for (const key of keys) {
        const entry = byId.get(key.id);
        assert(entry, `${key.keySpec} is listed under sha256(SPKI)`);
        assertEquals(entry.keySpec, key.keySpec);
        assertEquals(entry.publicKey, key.spki.toBase64());
        const one = await h.request(`/v1/keys/${key.id}`);
        assertEquals(await one.json(), entry);
      }
    } finally {
      await h.client.close();
    }
  });

  Deno.test(`${mode}: every algorithm and key size signs; openssl and WebCrypto verify`, async () => {
    const h = await harness(mode, keys, keysDir);
    try {
      for (const key of keys) {
        for (const algorithm of algorithmsFor(key.keySpec)) {
          const what = `${key.keySpec} ${algorithm}`;
          const digest = await digestFor(algorithm, message);
          const viaDigest = await h.request(`/v1/keys/${key.id}/sign`, {
            method: "POST",
            json: { algorithm, messageType: "DIGEST", message: digest.toBase64() },
          });
          assertEquals(viaDigest.status, 200, what);
          const signed = await viaDigest.json();
          assertEquals(signed.keyId, key.id);
          assertEquals(signed.algorithm, algorithm);
          const signature = Uint8Array.fromBase64(signed.signature);
          assertEquals(await opensslCheck(key, algorithm, digest, signature), undefined, what);

          const isEcdsa = ALGORITHM_DETAILS[algorithm].scheme === "ECDSA";
          const viaRaw = await h.request(`/v1/keys/${key.id}/sign`, {
            method: "POST",
            json: {
              algorithm,
              messageType: "RAW",
              message: message.toBase64(),
              ...(isEcdsa ? { signatureFormat: "RAW" } : {}),
            },
          });
          assertEquals(viaRaw.status, 200, what);
          const rawSignature = Uint8Array.fromBase64((await viaRaw.json()).signature);
          assert(await webCryptoVerify(key, algorithm, message, rawSignature), `WebCrypto verifies ${what}`);
          if (isEcdsa) {
            const width = key.keySpec === "ECC_NIST_P256" ? 64 : 96;
            assertEquals(rawSignature.length, width, `${what} r||s width`);
          }
        }
      }
    } finally {
      await h.client.close();
    }
  });

  Deno.test(`${mode}: keys generated in the guest sign verifiably and can be deleted`, async () => {
    const h = await harness(mode, keys, keysDir);
    try {
      for (const keySpec of ["ECC_NIST_P256", "RSA_2048"] as const) {
        const created = await h.request("/v1/keys", { method: "POST", json: { keySpec } });
        assertEquals(created.status, 201);
        const json = await created.json();
        const info = { id: json.id, keySpec: json.keySpec, publicKey: Uint8Array.fromBase64(json.publicKey) };
        assertEquals(info.keySpec, keySpec);
        const spkiId = toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", info.publicKey)));
        assertEquals(info.id, spkiId, "id = sha256(SPKI)");
        const algorithm = keySpec === "RSA_2048" ? "RSASSA_PSS_SHA_256" : "ECDSA_SHA_256";
        const res = await h.request(`/v1/keys/${info.id}/sign`, {
          method: "POST",
          json: { algorithm, messageType: "RAW", message: message.toBase64(), ...(keySpec === "RSA_2048" ? {} : { signatureFormat: "RAW" }) },
        });
        assertEquals(res.status, 200);
        const fixture: FixtureKey = { keySpec, path: "", publicPath: "", spki: info.publicKey, id: info.id };
        assert(await webCryptoVerify(fixture, algorithm, message, Uint8Array.fromBase64((await res.json()).signature)));

        const forbidden = await errorOf(await h.request(`/v1/keys/${info.id}?immediately=true`, { method: "DELETE", token: SCOPED }));
        assertEquals([forbidden.status, forbidden.code], [403, "forbidden"], "deleting needs a full-scope token");
        assertEquals((await h.request(`/v1/keys/${info.id}?immediately=true`, { method: "DELETE" })).status, 204);
        const gone = await errorOf(await h.request(`/v1/keys/${info.id}`));
        assertEquals([gone.status, gone.code], [404, "key_not_found"]);
        const again = await errorOf(await h.request(`/v1/keys/${info.id}?immediately=true`, { method: "DELETE" }));
        assertEquals([again.status, again.code], [404, "key_not_found"], "deleting twice is not found, not internal");
      }
    } finally {
      await h.client.close();
    }
  });

  Deno.test(`${mode}: bad input gets a typed error and the signer keeps serving`, async () => {
    const h = await harness(mode, keys, keysDir);
    const rsa = keys.find((k) => k.keySpec === "RSA_2048")!;
    const p256 = keys.find((k) => k.keySpec === "ECC_NIST_P256")!;
    const sign = (id: string, json: unknown, token?: string | null) =>
      h.request(`/v1/keys/${id}/sign`, { method: "POST", json, token });
    const good = { algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).toBase64() };
    const cases: [string, Promise<Response>, number, string][] = [
      ["no token", sign(p256.id, good, null), 401, "unauthorized"],
      ["unknown token", sign(p256.id, good, "nope"), 401, "unauthorized"],
      ["scoped token, other key", sign(rsa.id, { ...good, algorithm: "RSASSA_PSS_SHA_256" }, SCOPED), 403, "forbidden"],
      ["unknown key", sign("ab".repeat(32), good), 404, "key_not_found"],
      ["id too long", sign("ab".repeat(33), good), 404, "key_not_found"],
      ["id not hex", sign("zz".repeat(32), good), 404, "key_not_found"],
      ["id path tricks", h.request("/v1/keys/..%2F..%2Fetc%2Fpasswd"), 404, "key_not_found"],
      ["bad base64", sign(p256.id, { ...good, message: "not base64!" }), 400, "bad_request"],
      ["unpadded base64", sign(p256.id, { ...good, message: "AQI" }), 400, "bad_request"],
      ["digest too short", sign(p256.id, { ...good, message: new Uint8Array(31).toBase64() }), 400, "bad_request"],
      ["digest for another hash", sign(p256.id, { ...good, algorithm: "ECDSA_SHA_384" }), 400, "bad_request"],
      ["RSA algorithm on an EC key", sign(p256.id, { ...good, algorithm: "RSASSA_PKCS1_V1_5_SHA_256" }), 400, "bad_request"],
      ["ECDSA on an RSA key", sign(rsa.id, good), 400, "bad_request"],
      ["signatureFormat on RSA", sign(rsa.id, { ...good, algorithm: "RSASSA_PSS_SHA_256", signatureFormat: "RAW" }), 400, "bad_request"],
      ["unknown algorithm", sign(p256.id, { ...good, algorithm: "ECDSA_SHA_1" }), 400, "bad_request"],
      ["unknown field", sign(p256.id, { ...good, extra: 1 }), 400, "bad_request"],
      ["missing messageType", sign(p256.id, { algorithm: "ECDSA_SHA_256", message: good.message }), 400, "bad_request"],
      ["empty message", sign(p256.id, { ...good, messageType: "RAW", message: "" }), 400, "bad_request"],
      ["not JSON", h.request(`/v1/keys/${p256.id}/sign`, { method: "POST", body: "{nope" }), 400, "bad_request"],
      ["JSON array", sign(p256.id, [good]), 400, "bad_request"],
      ["body over the limit", sign(p256.id, { ...good, messageType: "RAW", message: new Uint8Array(8192).toBase64() }), 413, "too_large"],
      ["declared length over the limit", h.request(`/v1/keys/${p256.id}/sign`, { method: "POST", headers: { "Content-Length": "5000" }, body: "{}" }), 413, "too_large"],
      ["declared length not a number", h.request(`/v1/keys/${p256.id}/sign`, { method: "POST", headers: { "Content-Length": "12abc" }, body: "{}" }), 400, "bad_request"],
      ["unknown route", h.request("/v2/nothing"), 404, "not_found"],
      ["metrics need a full-scope token", h.request("/metrics", { token: SCOPED }), 403, "forbidden"],
      ["generating needs a full-scope token", h.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256" }, token: SCOPED }), 403, "forbidden"],
      ["unknown key spec", h.request("/v1/keys", { method: "POST", json: { keySpec: "RSA_1024" } }), 400, "bad_request"],
      ["fault injection is off by default", h.request("/v1/faults/trap", { method: "POST" }), 404, "not_found"],
    ];
    try {
      for (const [what, response, status, code] of cases) {
        const res = await response;
        const err = await errorOf(res);
        assertEquals([err.status, err.code], [status, code], what);
        assert(err.message.length > 0, `${what} has a message`);
        if (status === 401) assertEquals(res.headers.get("WWW-Authenticate"), "Bearer");
        // Only an answer sent before the body was read whole ends its connection.
        assertEquals(res.headers.get("Connection"), status === 413 ? "close" : null, what);
      }
      const after = await sign(p256.id, good);
      assertEquals(after.status, 200, "still signing after every bad request");
      const scopedOk = await sign(p256.id, good, SCOPED);
      assertEquals(scopedOk.status, 200, "a scoped token signs with its own key");
      const scopedList = await (await h.request("/v1/keys", { token: SCOPED })).json();
      assertEquals(scopedList.keys.map((k: { id: string }) => k.id), [p256.id], "a scoped token lists only its keys");
    } finally {
      await h.client.close();
    }
  });

  Deno.test(`${mode}: a trap fails only its own request; the guest is re-created with its keys`, async () => {
    const client = await startClient(mode, keysDir);
    let trapNext = true;
    // The first sign sends the guest a trap instead; everything else goes to the real client.
    const trapping = new Proxy(client, {
      get(target, name, receiver) {
        if (name !== "sign") {
          const value = Reflect.get(target, name, receiver);
          // Bound to the client itself: its private fields are not reachable through a Proxy.
          return typeof value === "function" ? value.bind(target) : value;
        }
        return (req: Parameters<SignerClient["sign"]>[0]) => {
          if (!trapNext) return target.sign(req);
          trapNext = false;
          return target.injectTrap().then((err) => Promise.reject(err));
        };
      },
    });
    const h = await harness(mode, keys, keysDir, { signer: trapping });
    try {
      const p256 = keys.find((k) => k.keySpec === "ECC_NIST_P256")!;
      const body = { algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).toBase64() };
      const [trapped, concurrent] = await Promise.all([
        h.request(`/v1/keys/${p256.id}/sign`, { method: "POST", json: body }),
        h.request(`/v1/keys/${p256.id}`),
      ]);
      const err = await errorOf(trapped);
      assertEquals([err.status, err.code], [500, "internal"], "a trap is internal, never key_not_found");
      assertEquals(concurrent.status, 200, "a request beside the trapped one is unharmed");
      const res = await h.request(`/v1/keys/${p256.id}/sign`, { method: "POST", json: body });
      assertEquals(res.status, 200, "the re-created guest reloaded the key directory");
      assertEquals((await h.request("/healthz", { token: null })).status, 200);
    } finally {
      await client.close();
      await h.client.close();
    }
  });

  Deno.test(`${mode}: a closed signer answers 503 signer_unavailable`, async () => {
    const h = await harness(mode, keys, keysDir);
    await h.client.close();
    const health = await errorOf(await h.request("/healthz", { token: null }));
    assertEquals([health.status, health.code], [503, "signer_unavailable"]);
    const p256 = keys.find((k) => k.keySpec === "ECC_NIST_P256")!;
    const res = await errorOf(await h.request(`/v1/keys/${p256.id}`));
    assertEquals([res.status, res.code], [503, "signer_unavailable"]);
  });
}

Deno.test("more signer calls in flight than allowed answer 429 overloaded; /healthz is outside the limit", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const stub = {
    mode: "stub",
    listKeys: () => held.then(() => []),
    health: () => Promise.resolve(),
  } as unknown as SignerClient;
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
  const app = createApp({ signer: stub, tokens, maxInFlight: 1 });
  const list = () => app.request("/v1/keys", { headers: { Authorization: `Bearer ${ADMIN}` } });
  const first = list();
  const second = await errorOf(await list());
  assertEquals([second.status, second.code], [429, "overloaded"]);
  assertEquals((await app.request("/healthz")).status, 200, "a full server still answers its health check");
  release();
  assertEquals((await first).status, 200);
});

Deno.test("while the limit is full, a /v1/ request is refused 429 before its token is checked, counted and recorded without one", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const stub = { mode: "stub", listKeys: () => held.then(() => []), health: () => Promise.resolve() } as unknown as SignerClient;
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
  const records: AuditRecord[] = [];
  const metrics = new Metrics();
  const app = createApp({ signer: stub, tokens, maxInFlight: 1, metrics, audit: { record: (r) => void records.push(r) } });
  const first = app.request("/v1/keys", { headers: { Authorization: `Bearer ${ADMIN}` } });
  const refused = await app.request(`/v1/keys/${"ab".repeat(32)}/sign`, { method: "POST", headers: { "X-Request-Id": "req-7" }, body: "{}" });
  assertEquals(refused.headers.get("X-Request-Id"), "req-7");
  assertEquals(refused.headers.get("Content-Type"), "application/json");
  const err = await errorOf(refused);
  assertEquals([err.status, err.code], [429, "overloaded"], "refused before the missing token was noticed");
  assertEquals((await app.request("/livez")).status, 200, "the probes are outside the limit");
  assertEquals((await app.request("/openapi.json")).status, 200, "so are routes outside /v1/");
  assertEquals(records.filter((r) => r.status === 429).map((r) => [r.requestId, r.route, r.error, r.token]), [["req-7", "/v1/keys/:id/sign", "overloaded", undefined]]);
  assert(
    metrics.render().includes('keycell_http_requests_total{route="/v1/keys/:id/sign",status="429"} 1'),
    "counted under its route and status",
  );
  release();
  assertEquals((await first).status, 200);
  assertEquals(records.at(-1)?.status, 200, "the request in flight is recorded once answered");
});

Deno.test("a route asked with a method it does not take answers 405 in keycell's shape, with Allow", async () => {
  const stub = { mode: "stub" } as unknown as SignerClient;
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
  const app = createApp({ signer: stub, tokens });
  const auth = { Authorization: `Bearer ${ADMIN}` };
  const cases: [string, string, string][] = [
    ["PUT", "/v1/keys", "GET, HEAD, POST"],
    ["GET", `/v1/keys/${"ab".repeat(32)}/sign`, "POST"],
    ["POST", "/healthz", "GET, HEAD"],
  ];
  for (const [method, path, allow] of cases) {
    const res = await app.request(path, { method, headers: auth });
    assertEquals(res.headers.get("Allow"), allow, `${method} ${path}`);
    const err = await errorOf(res);
    assertEquals([err.status, err.code], [405, "method_not_allowed"], `${method} ${path}`);
  }
  const unauthenticated = await errorOf(await app.request("/v1/keys", { method: "PUT" }));
  assertEquals([unauthenticated.status, unauthenticated.code], [401, "unauthorized"], "authentication comes first");
});

Deno.test("a token over its own rate answers 429 rate_limited with Retry-After; other tokens go on", async () => {
  const listed = [{ id: "a".repeat(64), keySpec: "ECC_NIST_P256", publicKey: new Uint8Array(1) }];
  const stub = { mode: "stub", listKeys: () => Promise.resolve(listed) } as unknown as SignerClient;
  const tokens = TokenStore.fromEntries([
    { name: "slow", sha256: sha256Hex("slow"), keys: "*", rate: { perSecond: 0.01, burst: 1 } },
    { name: "ops", sha256: sha256Hex("ops"), keys: "*" },
  ]);
  const app = createApp({ signer: stub, tokens });
  const list = (token: string) => app.request("/v1/keys", { headers: { Authorization: `Bearer ${token}` } });
  assertEquals((await list("slow")).status, 200);
  const refused = await list("slow");
  assertEquals(refused.headers.get("Retry-After"), "100");
  const body = await errorOf(refused);
  assertEquals([body.status, body.code], [429, "rate_limited"]);
  assertEquals((await list("ops")).status, 200);
});

Deno.test("metrics count requests and signatures", async () => {
  const h = await harness("inline", keys, keysDir);
  try {
    const p256 = keys.find((k) => k.keySpec === "ECC_NIST_P256")!;
    await h.request(`/v1/keys/${p256.id}/sign`, {
      method: "POST",
      json: { algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).toBase64() },
    });
    const refused = await h.request(`/v1/keys/${p256.id}/sign`, { method: "POST", token: null });
    assertEquals([refused.status, refused.headers.get("X-Request-Id")], [401, null], "no audit log: no request id is made");
    const echoed = await h.request("/healthz", { headers: { "X-Request-Id": "lb-1234" } });
    assertEquals(echoed.headers.get("X-Request-Id"), "lb-1234", "a client's own id is echoed");
    const text = await (await h.request("/metrics")).text();
    assert(text.includes('keycell_signatures_total{algorithm="ECDSA_SHA_256"} 1'), text);
    assert(text.includes('keycell_http_requests_total{route="/v1/keys/:id/sign",status="200"} 1'), text);
    assert(text.includes('keycell_http_requests_total{route="/v1/keys/:id/sign",status="401"} 1'), "refused by authentication, counted under its route");
    assert(text.includes('keycell_token_requests_total{token="admin",status="200"} 1'), "per token: the sign (the /metrics request itself is counted after it answers)");
  } finally {
    await h.client.close();
  }
});
