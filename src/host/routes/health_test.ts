import { assertEquals } from "../../../test/_assert.ts";
import { createApp } from "../app.ts";
import type { AuditRecord } from "../audit.ts";
import { sha256Hex, TokenStore } from "../auth.ts";
import { KeycellError } from "../../core/errors.ts";
import type { SignerClient } from "../../core/signer_client.ts";

const ADMIN = "admin-token-for-health-tests";

for (const path of ["/healthz", "/readyz"]) {
  Deno.test(`${path} answers 503 signer_unavailable when the signer does not answer, and asks a stuck signer once`, async () => {
    let asked = 0;
    // A guest busy with one long generation: its health answer never comes.
    const stuck = { mode: "stub", health: () => (asked++, new Promise<void>(() => {})) } as unknown as SignerClient;
    const app = createApp({ signer: stuck, tokens: TokenStore.fromEntries([]) });
    const answers = await Promise.all([app.request(path), app.request("/healthz"), app.request("/readyz")]);
    for (const res of answers) {
      const body = await res.json();
      assertEquals([res.status, body.error.code], [503, "signer_unavailable"]);
    }
    assertEquals(asked, 1, "probes share the check under way");
  });

  Deno.test(`${path} answers 200 with the signer's mode when the guest and the store answer`, async () => {
    const signer = { mode: "stub", health: () => Promise.resolve() } as unknown as SignerClient;
    const res = await createApp({ signer, tokens: TokenStore.fromEntries([]) }).request(path);
    assertEquals([res.status, await res.json()], [200, { status: "ok", signer: "stub" }]);
  });

  Deno.test(`${path} answers 503 when the key store is down (the guest answers)`, async () => {
    // The sealed-key service's health asks the guest, then reads the store: this is its failure.
    const storeDown = {
      mode: "stub",
      health: () => Promise.reject(new KeycellError("signer_unavailable", "the key store did not answer")),
    } as unknown as SignerClient;
    const res = await createApp({ signer: storeDown, tokens: TokenStore.fromEntries([]) }).request(path);
    const body = await res.json();
    assertEquals([res.status, body.error.code, body.error.message], [503, "signer_unavailable", "the key store did not answer"]);
  });
}

Deno.test("/livez answers 200 without asking the signer, even when the signer is stuck", async () => {
  let asked = 0;
  const stuck = { mode: "stub", health: () => (asked++, new Promise<void>(() => {})) } as unknown as SignerClient;
  const res = await createApp({ signer: stuck, tokens: TokenStore.fromEntries([]) }).request("/livez");
  assertEquals([res.status, await res.json(), asked], [200, { status: "ok" }, 0]);
});

Deno.test("the probes need no token and are outside the in-flight limit and token rates: never 401, never 429", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const stub = { mode: "stub", listKeys: () => held.then(() => []), health: () => Promise.resolve() } as unknown as SignerClient;
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*", rate: { perSecond: 0.01, burst: 1 } }]);
  const app = createApp({ signer: stub, tokens, maxInFlight: 1 });
  const auth = { Authorization: `Bearer ${ADMIN}` };
  const first = app.request("/v1/keys", { headers: auth });
  assertEquals((await app.request("/v1/keys", { headers: auth })).status, 429, "the limit is full and the token over its rate");
  for (const path of ["/livez", "/readyz", "/healthz"]) {
    for (const headers of [{}, auth, { Authorization: "Bearer not-a-token" }]) {
      assertEquals((await app.request(path, { headers })).status, 200, `${path} ${JSON.stringify(headers)}`);
    }
  }
  release();
  assertEquals((await first).status, 200);
});

Deno.test("the audit log leaves the probes out", async () => {
  const records: AuditRecord[] = [];
  const signer = { mode: "stub", health: () => Promise.resolve() } as unknown as SignerClient;
  const app = createApp({ signer, tokens: TokenStore.fromEntries([]), audit: { record: (r) => void records.push(r) } });
  for (const path of ["/livez", "/readyz", "/healthz", "/nowhere"]) await app.request(path);
  assertEquals(records.map((r) => [r.route, r.status]), [["/*", 404]]);
});
