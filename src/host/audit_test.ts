import { hash } from "node:crypto";
import { assert, assertEquals } from "../../test/_assert.ts";
import { createApp } from "./app.ts";
import type { AuditRecord } from "./audit.ts";
import { sha256Hex, TokenStore } from "./auth.ts";
import { startSigner } from "../deno/signer.ts";
import { WASM } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";

const ADMIN = "admin-token-for-audit-tests";
const SCOPED = "scoped-token-for-audit-tests";

Deno.test("audit log through the app: who did what to which key, how it ended; never a token or a message", async () => {
  const dir = await tempDir("keycell-audit-");
  const { client } = await startSigner("inline", { wasm: WASM, keysDir: `${dir}/keys` });
  try {
    // What a sink is handed is what a file would hold: the JSON of each record.
    const lines: string[] = [];
    const audit = { record: (r: AuditRecord) => void lines.push(JSON.stringify(r)) };
    const kept = await client.generate("ECC_NIST_P256");
    const tokens = TokenStore.fromEntries([
      { name: "admin", sha256: sha256Hex(ADMIN), keys: "*" },
      { name: "scoped", sha256: sha256Hex(SCOPED), keys: [kept.id] },
    ]);
    const app = createApp({ signer: client, tokens, audit });
    const requestIds: string[] = [];
    const call = async (method: string, path: string, token: string | null, json?: unknown, requestId?: string) => {
      const res = await app.request(path, {
        method,
        headers: {
          ...(token === null ? {} : { Authorization: `Bearer ${token}` }),
          ...(requestId === undefined ? {} : { "X-Request-Id": requestId }),
          "Content-Type": "application/json",
        },
        body: json === undefined ? undefined : JSON.stringify(json),
      });
      requestIds.push(res.headers.get("X-Request-Id")!);
      return res;
    };
    const message = new TextEncoder().encode("an audited message");
    const sign = { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: message.toBase64() };

    const generated = await (await call("POST", "/v1/keys", ADMIN, { keySpec: "ECC_NIST_P256" })).json();
    const statuses = [
      (await call("POST", `/v1/keys/${kept.id}/sign`, SCOPED, sign, "edge-7f3a.42")).status,
      (await call("POST", `/v1/keys/${generated.id}/sign`, SCOPED, sign, "not an id")).status,
      (await call("POST", `/v1/keys/${kept.id}/sign`, null, sign)).status,
      (await call("POST", `/v1/keys/${kept.id}/sign`, "not-a-token", sign)).status,
      (await call("DELETE", `/v1/keys/${generated.id}?immediately=true`, ADMIN)).status,
      (await call("POST", `/v1/keys/${generated.id}/sign`, ADMIN, sign)).status,
      (await call("GET", "/healthz", null)).status,
      (await call("GET", "/nowhere", ADMIN)).status,
    ];
    assertEquals(statuses, [200, 403, 401, 401, 204, 404, 200, 404]);
    const records: AuditRecord[] = lines.map((line) => JSON.parse(line));
    const seen = records.map(({ token, method, route, status, error, keyId, keySpec, algorithm }) => ({ token, method, route, status, error, keyId, keySpec, algorithm }));
    const signed = { method: "POST", route: "/v1/keys/:id/sign", algorithm: "ECDSA_SHA_256", keySpec: undefined };
    assertEquals(seen, [
      { token: "admin", method: "POST", route: "/v1/keys", status: 201, error: undefined, keyId: generated.id, keySpec: "ECC_NIST_P256", algorithm: undefined },
      { ...signed, token: "scoped", status: 200, error: undefined, keyId: kept.id },
      { ...signed, token: "scoped", status: 403, error: "forbidden", keyId: generated.id, algorithm: undefined },
      { ...signed, token: undefined, status: 401, error: "unauthorized", keyId: undefined, algorithm: undefined },
      { ...signed, token: undefined, status: 401, error: "unauthorized", keyId: undefined, algorithm: undefined },
      { token: "admin", method: "DELETE", route: "/v1/keys/:id", status: 204, error: undefined, keyId: generated.id, keySpec: undefined, algorithm: undefined },
      { ...signed, token: "admin", status: 404, error: "key_not_found", keyId: generated.id },
      { token: undefined, method: "GET", route: "/*", status: 404, error: "not_found", keyId: undefined, keySpec: undefined, algorithm: undefined },
    ]);
    assertEquals(records[1].messageSha256, hash("sha256", message, "hex"));
    // Each answer carries its X-Request-Id, the client's when well formed, and the log records it.
    assertEquals(records.map((r) => r.requestId), requestIds.filter((_, i) => i !== 7), "every request but /healthz");
    assertEquals(requestIds[1], "edge-7f3a.42");
    assert(/^[0-9a-f-]{36}$/.test(requestIds[2]), `a malformed id is replaced: ${requestIds[2]}`);
    assertEquals(new Set(requestIds).size, requestIds.length, "ids are distinct");
    for (const r of records) assert(Date.parse(r.time) > 0 && r.ms >= 0, JSON.stringify(r));
    const text = lines.join("\n");
    for (const secret of [ADMIN, SCOPED, "not-a-token", message.toBase64(), "an audited message"]) {
      assert(!text.includes(secret), `the log holds ${secret}`);
    }
  } finally {
    await client.close();
  }
});
