/**
 * Upgrade and SIGTERM under load. An upgrade of `serve`: with KEYCELL_REUSE_PORT=1 a new server
 * starts on the running one's address, the old one gets SIGTERM and drains, while clients sign on
 * a new connection each, and others on connections they keep alive (which the old server answers
 * with `Connection: close` as it drains); every request must be signed. SIGTERM alone: every request in flight
 * when the signal arrives (key generations) is answered. (The key server's upgrade is not measured here yet.)
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { startServer } from "../_command.ts";
import { apiClient } from "../_server.ts";
import { closedLoop, errorKind, latencies, size, sleep, Tally } from "./_measure.ts";
import { serveWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const CLIENTS = 4;

/** Runs the scenario and records its row. */
export async function upgradeAndSigterm(): Promise<void> {
  const figures: string[] = [];
  // A drain long enough for the key generations in flight at SIGTERM.
  const env = { KEYCELL_SIGNER: "worker", KEYCELL_REUSE_PORT: "1", KEYCELL_DRAIN_MS: "60000" };

  // The upgrade: old and new server on one address, a new connection for every request.
  const old = await serveWithKey(env);
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const keepingAlive = Deno.createHttpClient({});
  const upgrades = size(1, 3);
  const upgrade = new Tally();
  const keptAlive = new Tally();
  let current = old.server;
  try {
    let stopping = false;
    const load = Promise.all([
      closedLoop(CLIENTS, () => old.sign(client), () => stopping, upgrade),
      closedLoop(CLIENTS, () => old.sign(keepingAlive), () => stopping, keptAlive),
    ]);
    for (let i = 0; i < upgrades; i++) {
      await sleep(size(500, 2_000));
      const next = await startServer({ dataDir: old.dataDir, env: { ...env, KEYCELL_LISTEN: new URL(old.server.url).host } });
      assertEquals(await current.stop(), 0, "the old server drains and exits 0");
      current = next;
    }
    await sleep(size(500, 2_000));
    stopping = true;
    await load;
  } finally {
    client.close();
    keepingAlive.close();
  }
  const migrates = await Deno.readTextFile("/proc/sys/net/ipv4/tcp_migrate_req").then((t) => t.trim() === "1", () => false);
  figures.push(
    `${upgrades} upgrade(s) of serve under ${CLIENTS} clients (a new connection per request): ${upgrade.describe()}; ${latencies(upgrade.good)}; ` +
      `net.ipv4.tcp_migrate_req=${migrates ? 1 : 0}`,
    `the same upgrade(s) under ${CLIENTS} clients on kept-alive connections: ${keptAlive.describe()}; ${latencies(keptAlive.good)}`,
  );

  // SIGTERM: key generations in flight when it arrives (RSA-2048 takes the guests a while, so
  // they are still there when the signal comes), each to be answered 201 within the drain.
  const sigterm = new Tally((kind) => kind === "201");
  const generations = size(6, 16);
  const api = apiClient(current, old.token);
  const inFlight = Array.from({ length: generations }, async () => {
    const started = performance.now();
    const kind = await api("POST", "/v1/keys", { keySpec: "RSA_2048" }).then(async (res) => (await res.body?.cancel(), String(res.status)), errorKind);
    sigterm.add(kind, performance.now() - started);
  });
  // Time for every request to reach the server (shutdown_test.ts waits the same).
  await sleep(300);
  const code = await current.stop();
  await Promise.all(inFlight);
  figures.push(`SIGTERM with ${generations} RSA-2048 generations in flight: ${sigterm.describe()}, ${latencies(sigterm.good)}; exit code ${code}`);
  figures.push("the key server's upgrade: not run by this row; test/upgrade_test.ts signs across one over TCP, TLS and Unix in every test run");

  const ok = upgrade.failures === 0 && keptAlive.failures === 0 && sigterm.failures === 0 && code === 0;
  await recordRow({ row: "upgrade", verdict: ok ? "pass" : "fail", figures, note: migrates ? undefined : "without net.ipv4.tcp_migrate_req=1 a connection queued on the old listener as it closes is reset (README, \"Upgrading without downtime\")" });
  // A connection still queued on the old listener when it closes is reset unless the kernel hands
  // it on (tcp_migrate_req). Each client has one connection open at a time and opens its next one
  // after the reset, when only the new listener is left: at most one reset a client an upgrade.
  const reset = upgrade.total - (upgrade.counts["200"] ?? 0);
  assert(Object.keys(upgrade.counts).every((k) => k === "200" || !/^\d+$/.test(k)), `every answer across the upgrade is a signature: ${upgrade.describe()}`);
  assert(reset <= (migrates ? 0 : CLIENTS * upgrades), `requests failed across the upgrade: ${upgrade.describe()}`);
  // A kept-alive connection is told to close with an answer, so its client's next request opens a
  // connection after the old listener has closed: none can be reset.
  assertEquals(keptAlive.failures, 0, `every request on a kept-alive connection across the upgrade is signed: ${keptAlive.describe()}`);
  assertEquals(sigterm.failures, 0, `every request in flight at SIGTERM is answered: ${sigterm.describe()}`);
  assertEquals(code, 0);
}
