// The key lifecycle through the HTTP API of a real `keycell serve`, in worker and inline modes:
// generation and wrapped import into sealed storage, paging, restart persistence (keys come back
// by unsealing on a miss), deletion, and the faults: corrupt blobs, a wrong or missing master key,
// malformed imports, and a key store that is down.

import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals } from "./_assert.ts";
import { type FixtureKey, makeKeys, openssl } from "./_fixtures.ts";
import { webCryptoVerify } from "./_verify.ts";
import { runKeycell, startServer } from "./_command.ts";
import { wrapForImport } from "./_wrap.ts";
import { startTestPostgres } from "./_postgres_server.ts";
import { tempDir } from "./_temp.ts";

type Json = Record<string, unknown>;

async function sha256Hex(text: string): Promise<string> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))).toHex();
}

function client(url: string, token: string) {
  return async (method: string, path: string, body?: unknown): Promise<{ status: number; json: Json }> => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : {} };
  };
}

type Call = ReturnType<typeof client>;

const MESSAGE = new TextEncoder().encode("keycell sealed keys");

/** Signs MESSAGE and checks the signature with WebCrypto against the key's public key. */
async function signsVerifiably(call: Call, key: { id: string; keySpec: string; publicKey: string }): Promise<number> {
  const ec = key.keySpec.startsWith("ECC");
  const algorithm = ec ? (key.keySpec === "ECC_NIST_P256" ? "ECDSA_SHA_256" : "ECDSA_SHA_384") : "RSASSA_PSS_SHA_256";
  const res = await call("POST", `/v1/keys/${key.id}/sign`, {
    algorithm,
    messageType: "RAW",
    message: MESSAGE.toBase64(),
    ...(ec ? { signatureFormat: "RAW" } : {}),
  });
  if (res.status !== 200) return res.status;
  assert(
    await webCryptoVerify({ spki: Uint8Array.fromBase64(key.publicKey) }, algorithm, MESSAGE, Uint8Array.fromBase64(res.json.signature as string)),
    `${key.keySpec} signature verifies`,
  );
  return 200;
}

async function listAll(call: Call, limit: number): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (let pages = 0; pages < 100; pages++) {
    const res = await call("GET", `/v1/keys?limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`);
    assertEquals(res.status, 200);
    const keys = res.json.keys as { id: string }[];
    assert(keys.length <= limit);
    ids.push(...keys.map((k) => k.id));
    cursor = res.json.nextCursor as string | undefined;
    if (cursor === undefined) return ids;
  }
  throw new Error("paging did not end");
}

/** Runs `serve` expecting it to refuse to start; resolves with everything it printed. */
async function startFails(dataDir: string, env: Record<string, string>): Promise<string> {
  // A server that starts after all would run until the timeout kills it, and fail below.
  const out = await runKeycell("serve", { env: { ...env, KEYCELL_DATA_DIR: dataDir, KEYCELL_LISTEN: "127.0.0.1:0" } });
  assertEquals(out.code, 1, out.output);
  return out.output;
}

for (const mode of ["worker", "inline", "process"]) {
  Deno.test(`sealed keys (${mode}): generate, wrapped import, paging, restart, delete, faults`, async () => {
    const dataDir = await tempDir("keycell-keys-");
    const env = { KEYCELL_SIGNER: mode, KEYCELL_SIGNER_INSTANCES: "2" };
    try {
      let server = await startServer({ dataDir, env, timeoutMs: 60_000 });
      const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
      let call = client(server.url, token);
      const generated: Json[] = [];
      const imported: Json[] = [];
      let p384: FixtureKey;
      try {
        assertEquals((await Deno.stat(`${dataDir}/master.key`)).mode! & 0o777, 0o600);
        assertEquals((await Deno.stat(`${dataDir}/master.key`)).size, 32);
        assert(server.lines.some((l) => l.includes("created the master key")));

        for (const keySpec of ["ECC_NIST_P256", "ECC_NIST_P256", "ECC_NIST_P384", "RSA_2048"]) {
          const res = await call("POST", "/v1/keys", { keySpec });
          assertEquals(res.status, 201);
          assertEquals(res.json.keySpec, keySpec);
          generated.push(res.json);
          assertEquals(await signsVerifiably(call, res.json as never), 200);
        }

        // Wrapped import: openssl wraps to the guest's wrapping key; the plaintext never crosses the host.
        const wrapping = await call("GET", "/v1/wrapping-key");
        assertEquals(wrapping.status, 200);
        const wrappingSpki = Uint8Array.fromBase64(wrapping.json.publicKey as string);
        const wrappingPem = new TextDecoder().decode(await openssl(["pkey", "-pubin", "-inform", "DER", "-text", "-noout"], wrappingSpki as Uint8Array<ArrayBuffer>));
        assert(wrappingPem.includes("4096 bit"), "an RSA-4096 wrapping key");
        assertEquals((await call("GET", "/v1/wrapping-key")).json.publicKey, wrapping.json.publicKey, "the same key every time");
        [p384] = await makeKeys(dataDir, ["ECC_NIST_P384"]);
        const wrapped = await wrapForImport(dataDir, wrappingSpki, p384.path);
        const res = await call("POST", "/v1/keys/import", { keySpec: "ECC_NIST_P384", wrappedKey: wrapped.toBase64() });
        assertEquals(res.status, 201);
        assertEquals(res.json.id, p384.id, "the id is the SHA-256 of the SPKI openssl computed");
        imported.push(res.json);
        assertEquals(await signsVerifiably(call, res.json as never), 200);

        // Malformed imports answer 400 and leave nothing behind.
        const before = await listAll(call, 1000);
        const flipped = wrapped.slice();
        flipped[flipped.length - 1] ^= 1;
        const [rsa] = await makeKeys(`${dataDir}/rsa`, ["RSA_2048"]);
        for (
          const body of [
            { keySpec: "ECC_NIST_P384", wrappedKey: flipped.toBase64() },
            { keySpec: "ECC_NIST_P256", wrappedKey: wrapped.toBase64() },
            { keySpec: "ECC_NIST_P384", wrappedKey: wrapped.subarray(0, 512).toBase64() },
            { keySpec: "ECC_NIST_P384", wrappedKey: "not base64!" },
            { keySpec: "RSA_2048", wrappedKey: (await wrapForImport(dataDir, new Uint8Array(rsa.spki), rsa.path)).toBase64() },
          ]
        ) {
          const bad = await call("POST", "/v1/keys/import", body);
          assertEquals(bad.status, 400, JSON.stringify(bad.json));
        }
        assertEquals(await listAll(call, 1000), before, "nothing stored");
        assertEquals((await call("POST", `/v1/keys/${rsa.id}/sign`, { algorithm: "RSASSA_PSS_SHA_256", messageType: "RAW", message: "AA==" })).status, 404);

        const all = [...generated, ...imported].map((k) => k.id as string).sort();
        assertEquals(await listAll(call, 2), all, "pages of two cover every key once, in id order");
        assertEquals((await call("GET", "/v1/keys?limit=0")).status, 400);
        assertEquals((await call("GET", "/v1/keys?cursor=zz")).status, 400);
      } finally {
        assertEquals(await server.stop(), 0);
      }

      // After a restart every key comes back from its sealed blob on first use.
      const scope = [generated[1].id as string, imported[0].id as string, "ab".repeat(32)];
      await Deno.writeTextFile(`${dataDir}/tokens.json`, JSON.stringify({ tokens: [{ name: "scoped", sha256: await sha256Hex("scoped-token"), keys: scope }] }));
      server = await startServer({ dataDir, env, timeoutMs: 60_000 });
      call = client(server.url, token);
      const [gone, ...kept] = [...generated, ...imported];
      try {
        assert(!server.lines.some((l) => l.includes("created the master key")), "the master key is reused");
        // Pages of one, each cursor the id the page showed: nothing names a key outside the scope.
        const scoped = client(server.url, "scoped-token");
        const [a, b] = scope.slice(0, 2).sort();
        const first = await scoped("GET", "/v1/keys?limit=1");
        const second = await scoped("GET", `/v1/keys?limit=1&cursor=${first.json.nextCursor}`);
        const ids = (page: { json: Json }) => (page.json.keys as Json[]).map((k) => k.id);
        assertEquals([ids(first), first.json.nextCursor, ids(second), second.json.nextCursor], [[a], a, [b], undefined]);
        for (const key of [...generated, ...imported]) assertEquals(await signsVerifiably(call, key as never), 200);
        assertEquals((await call("GET", `/v1/keys/${gone.id}`)).json.publicKey, gone.publicKey);
        assertEquals((await call("DELETE", `/v1/keys/${gone.id}?immediately=true`)).status, 204);
        assertEquals(await signsVerifiably(call, gone as never), 404);
        assertEquals((await call("DELETE", `/v1/keys/${gone.id}?immediately=true`)).status, 404);
        assertEquals((await call("GET", `/v1/keys/${gone.id}`)).status, 404);
      } finally {
        assertEquals(await server.stop(), 0);
      }

      // A corrupt blob is that key's error alone; a blob moved under another key's id does not open either.
      const db = new DatabaseSync(`${dataDir}/keys.db`);
      const [corrupt, moved, healthy] = kept;
      const blob = (db.prepare("SELECT sealed FROM keys WHERE id = ?").get(corrupt.id as string) as { sealed: Uint8Array }).sealed;
      const flippedBlob = new Uint8Array(blob);
      flippedBlob[20] ^= 1;
      db.prepare("UPDATE keys SET sealed = ? WHERE id = ?").run(flippedBlob, corrupt.id as string);
      db.prepare("UPDATE keys SET sealed = ? WHERE id = ?").run(new Uint8Array(blob), moved.id as string);
      db.close();
      server = await startServer({ dataDir, env, timeoutMs: 60_000 });
      call = client(server.url, token);
      try {
        for (const key of [corrupt, moved]) {
          const res = await call("POST", `/v1/keys/${key.id}/sign`, { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "AA==" });
          assertEquals([res.status, (res.json.error as Json).code], [500, "key_unusable"]);
        }
        assertEquals(await signsVerifiably(call, healthy as never), 200, "other keys keep working");
        assertEquals(await signsVerifiably(call, imported[0] as never), 200);
      } finally {
        assertEquals(await server.stop(), 0);
      }

      // A wrong or missing master key stops startup with a clear message; no new key is made over old ones.
      const master = await Deno.readFile(`${dataDir}/master.key`);
      await Deno.writeFile(`${dataDir}/master.key`, crypto.getRandomValues(new Uint8Array(32)));
      const wrong = await startFails(dataDir, env);
      assert(wrong.includes("is not the one the sqlite key store's keys are sealed under"), wrong);
      await Deno.remove(`${dataDir}/master.key`);
      const missing = await startFails(dataDir, env);
      assert(missing.includes("master.key is missing, but the sqlite key store holds 4 keys"), missing);
      assertEquals(await Deno.stat(`${dataDir}/master.key`).catch(() => undefined), undefined, "no new master key");
      await Deno.writeFile(`${dataDir}/master.key`, master, { mode: 0o600 });
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  });
}

Deno.test("sealed keys in PostgreSQL: two nodes share one key set, a delete reaches both; a store that goes down answers 503, never 404", async () => {
  const pg = await startTestPostgres();
  const dataDir = await tempDir("keycell-pg-");
  const servers: Awaited<ReturnType<typeof startServer>>[] = [];
  try {
    const env = { KEYCELL_STORE: "postgres", KEYCELL_POSTGRES_URL: pg.url, KEYCELL_SIGNER_INSTANCES: "1" };
    const a = await startServer({ dataDir: `${dataDir}/a`, env: { ...env, KEYCELL_SIGNER: "worker" }, timeoutMs: 60_000 });
    servers.push(a);
    const token = (await Deno.readTextFile(`${dataDir}/a/admin.token`)).trim();
    // The second node has its own data directory but the same master key and token file.
    await Deno.mkdir(`${dataDir}/b`);
    await Deno.copyFile(`${dataDir}/a/master.key`, `${dataDir}/b/master.key`);
    await Deno.copyFile(`${dataDir}/a/admin.token`, `${dataDir}/b/admin.token`);
    const callA = client(a.url, token);
    const key = await callA("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
    assertEquals(key.status, 201);

    // Node b asks the store before each signature whether a key it holds is still there.
    const b = await startServer({ dataDir: `${dataDir}/b`, env: { ...env, KEYCELL_SIGNER: "inline", KEYCELL_KEY_RECHECK_MS: "0" }, timeoutMs: 60_000 });
    servers.push(b);
    const tokenB = (await Deno.readTextFile(`${dataDir}/b/admin.token`)).trim();
    const callB = client(b.url, tokenB);
    assertEquals(await signsVerifiably(callB, key.json as never), 200, "node b unseals node a's key");
    assertEquals((await listAll(callB, 10)), [key.json.id]);

    // A key deleted on node a stops signing on node b, which still held it in its guest.
    const doomed = await callA("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
    assertEquals(await signsVerifiably(callB, doomed.json as never), 200);
    assertEquals((await callA("DELETE", `/v1/keys/${doomed.json.id}?immediately=true`)).status, 204);
    assertEquals(await signsVerifiably(callB, doomed.json as never), 404, "node b refuses the next signature");

    const other = await callB("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
    await pg.stop();
    const down = await callA("POST", `/v1/keys/${other.json.id}/sign`, { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "AA==" });
    assertEquals([down.status, (down.json.error as Json).code], [503, "signer_unavailable"]);
    assertEquals((await callA("GET", "/v1/keys")).status, 503);
    assertEquals((await callA("GET", `/v1/keys/${other.json.id}`)).status, 503);
    assertEquals((await callA("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" })).status, 503);
  } finally {
    for (const s of servers) await s.stop();
    await pg.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
