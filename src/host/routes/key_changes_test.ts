import { assertEquals } from "../../../test/_assert.ts";
import { errorOf, sealedApp, SCOPED } from "../../../test/_app.ts";
import { tempDir } from "../../../test/_temp.ts";

const SIGN = { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" };

Deno.test("key changes: admin tokens only; a token scoped to a name signs by it (the primary), not by the versions' ids; every change is audited", async () => {
  const dir = await tempDir("keycell-changes-");
  const t = await sealedApp({ dir, scopedKeys: ["api"] });
  try {
    const made = await (await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", name: "api", labels: { env: "prod" } } })).json();
    for (const change of ["rotate", "disable", "enable", "schedule-deletion", "cancel-deletion"]) {
      const init = change === "schedule-deletion" ? { method: "POST", json: {}, token: SCOPED } : { method: "POST", token: SCOPED };
      assertEquals(await errorOf(await t.request(`/v1/keys/api/${change}`, init)), [403, "forbidden"], change);
    }
    assertEquals(await errorOf(await t.request("/v1/keys/api?immediately=true", { method: "DELETE", token: SCOPED })), [403, "forbidden"]);
    assertEquals(await errorOf(await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", name: "x" }, token: SCOPED })), [403, "forbidden"]);

    const signed = await t.request("/v1/keys/api/sign", { method: "POST", json: SIGN, token: SCOPED });
    assertEquals([signed.status, (await signed.json()).keyId], [200, made.id]);
    const rotated = await (await t.request("/v1/keys/api/rotate", { method: "POST" })).json();
    const again = await t.request("/v1/keys/api/sign", { method: "POST", json: SIGN, token: SCOPED });
    assertEquals((await again.json()).keyId, rotated.primary, "the scope is the name: it follows the primary");
    assertEquals(await errorOf(await t.request(`/v1/keys/${made.id}/sign`, { method: "POST", json: SIGN, token: SCOPED })), [403, "forbidden"]);
    assertEquals((await (await t.request("/v1/keys/api", { token: SCOPED })).json()).labels, { env: "prod" });
    // Listing shows the scope's name as its primary version, and nothing else.
    await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256", name: "other" } });
    const listed = await (await t.request("/v1/keys?limit=1", { token: SCOPED })).json();
    assertEquals(listed, { keys: [{ id: rotated.primary, keySpec: "ECC_NIST_P256", publicKey: rotated.publicKey, name: "api" }] });

    assertEquals((await t.request("/v1/keys/api/disable", { method: "POST" })).status, 200);
    assertEquals((await t.request("/v1/keys/api/enable", { method: "POST" })).status, 200);
    assertEquals((await t.request("/v1/keys/api/schedule-deletion", { method: "POST", json: {} })).status, 200);
    assertEquals((await (await t.request("/v1/keys/api")).json()).state, "pending_deletion");
    assertEquals((await t.request("/v1/keys/api/cancel-deletion", { method: "POST" })).status, 200);
    assertEquals(await errorOf(await t.request("/v1/keys/api/schedule-deletion", { method: "POST", json: { pendingWindowDays: 31 } })), [400, "bad_request"]);
    assertEquals((await t.request("/v1/keys/api?immediately=true", { method: "DELETE" })).status, 204);

    const changes = t.audit.filter((r) => r.token === "admin" && r.status < 300 && r.method !== "GET" && r.keyName === "api");
    assertEquals(changes.map((r) => [r.method, r.route, r.keyName, r.keyId]), [
      ["POST", "/v1/keys", "api", made.id],
      ["POST", "/v1/keys/:id/rotate", "api", rotated.primary],
      ["POST", "/v1/keys/:id/disable", "api", rotated.primary],
      ["POST", "/v1/keys/:id/enable", "api", rotated.primary],
      ["POST", "/v1/keys/:id/schedule-deletion", "api", rotated.primary],
      ["POST", "/v1/keys/:id/cancel-deletion", "api", rotated.primary],
      ["DELETE", "/v1/keys/:id", "api", rotated.primary],
    ]);
  } finally {
    await t.close();
    await Deno.remove(dir, { recursive: true });
  }
});
