import { hash } from "node:crypto";
import { assert, assertEquals } from "../../test/_assert.ts";
import { createApp } from "./app.ts";
import { AuditLog, type AuditRecord } from "./audit.ts";
import { sha256Hex, TokenStore } from "./auth.ts";
import { Metrics } from "./metrics.ts";
import { startSigner } from "../deno/signer.ts";

const WASM = Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url));
const ADMIN = "admin-token-for-audit-tests";
const SCOPED = "scoped-token-for-audit-tests";

async function readRecords(path: string): Promise<AuditRecord[]> {
  const text = await Deno.readTextFile(path);
  return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line));
}

Deno.test("audit log: records in order, written on close, appended across opens, mode 0600", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/audit.log`;
    const record = (n: number): AuditRecord => ({ time: new Date(n).toISOString(), requestId: `r${n}`, method: "GET", route: "/v1/keys", status: 200, ms: n });
    const first = AuditLog.open(path);
    for (let n = 0; n < 3000; n++) first.record(record(n));
    await first.close();
    const second = AuditLog.open(path);
    second.record(record(3000));
    await second.close();
    assertEquals((await readRecords(path)).map((r) => r.ms), Array.from({ length: 3001 }, (_, n) => n));
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit log: reopen after a rotation moved the file writes to a new file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/audit.log`;
    const record = (ms: number): AuditRecord => ({ time: new Date().toISOString(), requestId: "r", method: "GET", route: "/v1/keys", status: 200, ms });
    const audit = AuditLog.open(path);
    audit.record(record(1));
    await Deno.rename(path, `${path}.1`);
    audit.record(record(2));
    await audit.reopen();
    audit.record(record(3));
    await audit.close();
    assertEquals((await readRecords(`${path}.1`)).map((r) => r.ms), [1, 2], "what was queued before the reopen");
    assertEquals((await readRecords(path)).map((r) => r.ms), [3]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit log: a write that fails is counted and reported, and the log keeps taking records", async () => {
  const metrics = new Metrics();
  // Every write to /dev/full fails with ENOSPC.
  const audit = AuditLog.open("/dev/full", metrics);
  const errors: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => errors.push(args.join(" "));
  try {
    audit.record({ time: new Date().toISOString(), requestId: "r", method: "GET", route: "/v1/keys", status: 200, ms: 1 });
    await audit.flush();
    audit.record({ time: new Date().toISOString(), requestId: "r", method: "GET", route: "/v1/keys", status: 200, ms: 1 });
    await audit.close();
  } finally {
    console.error = consoleError;
  }
  assertEquals(errors.length, 2, errors.join("\n"));
  assert(errors[0].startsWith("keycell: audit log write failed"), errors[0]);
  assert(metrics.render().includes("keycell_audit_write_failures_total{} 2"), metrics.render());
});

Deno.test("audit log through the app: who did what to which key, how it ended; never a token or a message", async () => {
  const dir = await Deno.makeTempDir();
  const { client } = await startSigner("inline", { wasm: WASM, keysDir: `${dir}/keys` });
  try {
    const path = `${dir}/audit.log`;
    const audit = AuditLog.open(path);
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
      (await call("DELETE", `/v1/keys/${generated.id}`, ADMIN)).status,
      (await call("POST", `/v1/keys/${generated.id}/sign`, ADMIN, sign)).status,
      (await call("GET", "/healthz", null)).status,
      (await call("GET", "/nowhere", ADMIN)).status,
    ];
    assertEquals(statuses, [200, 403, 401, 401, 204, 404, 200, 404]);
    await audit.close();

    const records = await readRecords(path);
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
    const text = await Deno.readTextFile(path);
    for (const secret of [ADMIN, SCOPED, "not-a-token", message.toBase64(), "an audited message"]) {
      assert(!text.includes(secret), `the log holds ${secret}`);
    }
  } finally {
    await client.close();
    await Deno.remove(dir, { recursive: true });
  }
});
