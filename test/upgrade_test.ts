/**
 * A zero-downtime upgrade of `serve`: with KEYCELL_REUSE_PORT=1 a new server starts on the address
 * of the running one, the old one is sent SIGTERM and drains, and clients signing all along get a
 * signature for every request that reached a server. Without it, a second server on the same address stops with "address in use".
 */

import { assert, assertEquals } from "./_assert.ts";
import { runKeycell, startServer } from "./_command.ts";
import { tempDir } from "./_temp.ts";

Deno.test("serve: a new server takes over the address of a draining one without a failed request (KEYCELL_REUSE_PORT=1)", async () => {
  const dataDir = await tempDir("keycell-upgrade-");
  const env = { KEYCELL_SIGNER: "inline", KEYCELL_REUSE_PORT: "1" };
  const old = await startServer({ dataDir, env });
  const listen = new URL(old.url).host;
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  const created = await fetch(`${old.url}/v1/keys`, { method: "POST", headers, body: JSON.stringify({ keySpec: "ECC_NIST_P256" }) });
  assertEquals(created.status, 201);
  const { id } = await created.json();

  // A new connection for every request, so that requests land on whichever server accepts them.
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const body = JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "RAW", message: btoa("upgrade") });
  const outcomes: string[] = [];
  let signing = true;
  const signer = (async () => {
    while (signing) {
      try {
        const res = await fetch(`${old.url}/v1/keys/${id}/sign`, { method: "POST", headers, body, client });
        await res.body?.cancel();
        outcomes.push(String(res.status));
      } catch (err) {
        outcomes.push((err as Error).message);
      }
    }
  })();

  let next: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    next = await startServer({ dataDir, env: { ...env, KEYCELL_LISTEN: listen } });
    const before = outcomes.length;
    assertEquals(await old.stop(), 0, "the old server drains and exits 0");
    // Keep signing until the new server alone has answered a good number of requests.
    while (outcomes.length < before + 200) await new Promise((r) => setTimeout(r, 20));
  } finally {
    signing = false;
    await signer;
    client.close();
    await next?.stop();
  }
  // Every answer is a signature. A connection still queued on the old listener when it closes is
  // reset before any request is read on it, unless the kernel hands it to the new listener
  // (net.ipv4.tcp_migrate_req=1, README "Upgrading without downtime"): then none may fail at all.
  const answered = outcomes.filter((o) => /^\d+$/.test(o));
  assertEquals(answered.filter((o) => o !== "200"), [], "every answer across the upgrade is a signature");
  const reset = outcomes.length - answered.length;
  const migrates = await Deno.readTextFile("/proc/sys/net/ipv4/tcp_migrate_req").then((t) => t.trim() === "1", () => false);
  assert(reset <= (migrates ? 0 : 2), `${reset} of ${outcomes.length} connections were reset: ${outcomes.filter((o) => !/^\d+$/.test(o))}`);
  assert(next !== undefined && next.lines.some((l) => l.startsWith("keycell ready on")));
});

Deno.test("serve: without KEYCELL_REUSE_PORT a second server on a used address stops with one line", async () => {
  const dataDir = await tempDir("keycell-upgrade-");
  const first = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
  try {
    const second = await runKeycell("serve", { env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_SIGNER: "inline", KEYCELL_LISTEN: new URL(first.url).host } });
    assertEquals(second.code, 1);
    assert(/^keycell: the address is in use/m.test(second.stderr), second.stderr);
    assert(!second.stderr.includes("    at "), "no stack trace");
  } finally {
    await first.stop();
  }
});
