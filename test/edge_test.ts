/**
 * keycell on workerd, as users run it (`deno task edge`): the build, the two Workers on a free
 * loopback port, the HTTP API with the statuses `serve` answers (wrapped import and metrics included), signatures checked by openssl
 * and WebCrypto, a restart that keeps the keys, a master key the store's keys were not sealed
 * under refused, and a clean stop that takes workerd with it.
 */

import { assert, assertEquals, assertRejects } from "./_assert.ts";
import type { FixtureKey } from "./_fixtures.ts";
import { apiClient, signAndVerify } from "./_server.ts";
import { checkAfterRestart, checkErrorsAndDelete, checkKeyRoutes, checkNamedKeys, json } from "./_http_conformance.ts";
import { alive, childrenOf, type RunningServer, startDeno } from "./_command.ts";
import { tempDir } from "./_temp.ts";
import { sha256Hex } from "../src/host/auth.ts";
import { build, dryRun } from "../scripts/edge.ts";

const EDGE = new URL("../scripts/edge.ts", import.meta.url).pathname;

/** `worker`: both Workers in one workerd process; `process`: the signer in a workerd process of its own. */
type Layout = "worker" | "process";

async function startEdge(dataDir: string, layout: Layout): Promise<RunningServer> {
  const running = await startDeno({
    args: ["--allow-all", EDGE, "run"],
    ready: /keycell ready on (http:\/\/\S+)/,
    env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_LISTEN: "127.0.0.1:0", KEYCELL_FAULT_INJECTION: "1", KEYCELL_SIGNER: layout },
    timeoutMs: 120_000,
  });
  return { ...running, url: running.ready[1] };
}

/** Stops the launcher with `signal` and checks that it exits 0 and every workerd is gone with it. */
async function stopEdge(server: RunningServer, layout: Layout, signal: "SIGTERM" | "SIGINT" = "SIGTERM"): Promise<void> {
  const children = childrenOf(server.pid);
  assertEquals(children.length, layout === "process" ? 2 : 1, "the launcher runs workerd itself, not through a shim");
  if (signal === "SIGINT") {
    Deno.kill(server.pid, "SIGINT");
    // stop() would send SIGTERM too: wait until SIGINT alone has ended the launcher.
    await ended(server.pid);
  }
  assertEquals(await server.stop(), 0, `${signal} stops cleanly`);
  assertEquals(children.filter(alive), [], "workerd stopped with the launcher");
}

/** Waits (a minute at most) until a child process has ended, before its parent reaps it. */
async function ended(pid: number): Promise<void> {
  for (let i = 0; i < 1200 && alive(pid) && !isZombie(pid); i++) await new Promise((resolve) => setTimeout(resolve, 50));
}

function isZombie(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return true;
  }
}


for (const layout of ["worker", "process"] as const) {
Deno.test(`edge (workerd, ${layout}): the HTTP API on the two Workers, keys kept across a restart, a foreign or missing master key refused, clean stops`, async () => {
  const root = await tempDir("keycell-edge-");
  const dataDir = `${root}/data`;
  try {
    let server = await startEdge(dataDir, layout);
    let ec: FixtureKey;
    let rsa: FixtureKey;
    let p384: FixtureKey;
    try {
      assert(server.lines.some((l) => l.includes("created an admin token")), "first start makes an admin token");
      assert(server.lines.some((l) => l.includes("created the master key")), "first start makes the master key");
      assertEquals((await Deno.stat(`${dataDir}/admin.token`)).mode! & 0o777, 0o600);
      assertEquals((await Deno.stat(`${dataDir}/master.key`)).mode! & 0o777, 0o600);
      const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
      const api = apiClient(server, token);

      const health = await fetch(`${server.url}/healthz`);
      assertEquals([health.status, await health.json()], [200, { status: "ok", signer: "service" }]);
      if (layout === "process") {
        // The signer's socket has no authentication: only its owner may reach it.
        assertEquals((await Deno.stat(`${dataDir}/edge-run`)).mode! & 0o777, 0o700);
        assert((await Deno.stat(`${dataDir}/edge-run/signer.sock`)).isSocket);
      }

      ({ ec, rsa, p384 } = await checkKeyRoutes(server, api, root));

      const metrics = await api("GET", "/metrics");
      assertEquals(metrics.status, 200);
      assert((await metrics.text()).includes('keycell_http_requests_total{route="/v1/keys",status="201"} 2'));
      assertEquals((await fetch(`${server.url}/metrics`)).status, 401);

      // A trap re-creates the guest, which opens the keys again from the store.
      const trap = await api("POST", "/v1/faults/trap");
      assertEquals([trap.status, ((await json(trap)).error as { code: string }).code], [500, "internal"]);
      await signAndVerify(api, ec);

      await checkErrorsAndDelete(api, ec);
      await checkNamedKeys(api);
    } finally {
      await stopEdge(server, layout);
    }

    // A restart: the same master key, the store's keys open in a fresh signer; a tokens.json beside
    // admin.token adds a token scoped to one key, whose listing the store's query narrows.
    const scopedToken = crypto.randomUUID();
    await Deno.writeTextFile(`${dataDir}/tokens.json`, JSON.stringify({ tokens: [{ name: "rsa-only", sha256: sha256Hex(scopedToken), keys: [rsa.id] }] }));
    server = await startEdge(dataDir, layout);
    try {
      assert(!server.lines.some((l) => l.includes("created")), "nothing is made on a second start");
      const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
      await checkAfterRestart(api, apiClient(server, scopedToken), rsa, [rsa, p384]);
    } finally {
      await stopEdge(server, layout, "SIGINT");
    }

    // A master key other than the one the store's keys are sealed under: nothing is served.
    await Deno.writeFile(`${dataDir}/master.key`, crypto.getRandomValues(new Uint8Array(32)));
    server = await startEdge(dataDir, layout);
    try {
      const health = await fetch(`${server.url}/healthz`);
      assertEquals([health.status, ((await json(health)).error as { code: string }).code], [503, "signer_unavailable"]);
      const sign = await apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim())("POST", `/v1/keys/${rsa.id}/sign`, {
        algorithm: "RSASSA_PSS_SHA_256",
        messageType: "RAW",
        message: "aGk=",
      });
      assertEquals(sign.status, 503);
      await sign.body?.cancel();
      assert(server.lines.some((l) => /master key \(id [0-9a-f]{64}\) is not the one the store's keys are sealed under/.test(l)), server.lines.join("\n"));
    } finally {
      await stopEdge(server, layout);
    }
    assertEquals(await Deno.stat(`${dataDir}/edge-run/signer.sock`).then(() => true, () => false), false, "no socket is left behind");

    // No master key beside a store: a new one could not open its keys, so nothing starts.
    await Deno.remove(`${dataDir}/master.key`);
    await assertRejects(() => startEdge(dataDir, layout), /exited with 1 before ready[^]*master key .* is missing, but keys sealed under it are stored in/);
    assertEquals(await Deno.stat(`${dataDir}/master.key`).then(() => true, () => false), false, "no master key was made");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
}

Deno.test("edge (workerd, process): a signer process that dies takes the api process with it, and the launcher exits 1", async () => {
  const root = await tempDir("keycell-edge-");
  try {
    const server = await startEdge(`${root}/data`, "process");
    const children = childrenOf(server.pid);
    try {
      const signer = children.find((pid) => Deno.readTextFileSync(`/proc/${pid}/cmdline`).includes("signer.capnp"));
      assert(signer !== undefined, "a signer process");
      Deno.kill(signer, "SIGKILL");
      await ended(server.pid);
    } finally {
      assertEquals(await server.stop(), 1);
    }
    assertEquals(children.filter(alive), [], "the api process stopped too");
    assert(server.lines.some((l) => l.includes("keycell: workerd (signer) exited with SIGKILL")), server.lines.join("\n"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("edge (wrangler): `wrangler deploy --dry-run` takes both built Workers with their bindings", async () => {
  await build();
  const { api, signer } = await dryRun();
  for (const binding of ["env.KEYS (KeyStoreObject)", "env.SIGNER (keycell-signer#Signer)"]) assert(api.includes(binding), api);
  assert(/signer\.wasm\s*│\s*compiled-wasm/.test(signer), signer);
  assert(!api.includes("signer.wasm"), "the api Worker carries no guest");
});
