/**
 * Master-key rotation beside live nodes: two `serve` nodes on one PostgreSQL store generate keys
 * all along while `keycell rotate-master-key` runs. The nodes answer 201 or 503 (a node still on
 * the old key refuses new keys once the store is fenced), and after a restart with the new master
 * key every key answered 201, and every key listed, signs.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { runKeycell, type RunningServer, startServer } from "../_command.ts";
import { startTestPostgres } from "../_postgres_server.ts";
import { apiClient } from "../_server.ts";
import { tempDir } from "../_temp.ts";
import { closedLoop, size, sleep, Tally } from "./_measure.ts";
import { listAll, signer } from "./_serve.ts";
import { recordRow } from "./_report.ts";

/** Runs the scenario and records its row. */
export async function rotationBesideNodes(): Promise<void> {
  const pg = await startTestPostgres();
  const dataDir = await tempDir("keycell-reliability-rotation-");
  const env = { KEYCELL_SIGNER: "worker", KEYCELL_STORE: "postgres", KEYCELL_POSTGRES_URL: pg.url };
  const nodes: RunningServer[] = [];
  try {
    nodes.push(await startServer({ dataDir, env }));
    nodes.push(await startServer({ dataDir, env }));
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    const apis = nodes.map((n) => apiClient(n, token));
    const made: string[] = [];
    const phases = { before: new Tally(), during: new Tally(), after: new Tally() };
    let phase: keyof typeof phases = "before";
    let stopping = false;
    // Two generating clients per node, each tallied under the phase its request began in.
    const generating = closedLoop(4, async (client) => {
      const tally = phases[phase];
      const started = performance.now();
      const res = await apis[client % 2]("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
      if (res.status === 201) made.push((await res.json()).id);
      else await res.body?.cancel();
      tally.add(String(res.status), performance.now() - started);
      return "counted";
    }, () => stopping);
    await sleep(size(500, 3_000));
    phase = "during";
    const started = performance.now();
    const rotation = await runKeycell("rotate-master-key", { env: { KEYCELL_DATA_DIR: dataDir, ...env }, timeoutMs: 120_000 });
    const rotationMs = performance.now() - started;
    phase = "after";
    await sleep(size(500, 3_000));
    stopping = true;
    await generating;
    for (const n of nodes.splice(0)) assertEquals(await n.stop(), 0);

    // Restarted with the new master key: every key signs.
    const node = await startServer({ dataDir, env });
    nodes.push(node);
    const listed = await listAll(apiClient(node, token));
    const failing: string[] = [];
    for (const id of new Set([...listed, ...made])) {
      const status = await signer(node.url, token, id)();
      if (status !== "200") failing.push(`${id}: ${status}`);
    }
    const resealed = /resealed (\d+) keys/.exec(rotation.output)?.[1] ?? "?";
    const figures = [
      `rotate-master-key beside 2 nodes with 2 generating clients each: exit ${rotation.code}, ${(rotationMs / 1000).toFixed(1)} s, resealed ${resealed} keys`,
      `generations before: ${phases.before.describe()}; while it ran: ${phases.during.describe()}; after (old key still loaded): ${phases.after.describe()}`,
      `after a restart with the new master key: ${listed.length} keys listed, ${made.length} answered 201; not signing: ${failing.length}`,
    ];
    const wrong = Object.values(phases).flatMap((t) => Object.keys(t.counts)).filter((k) => k !== "201" && k !== "503");
    const ok = rotation.code === 0 && failing.length === 0 && wrong.length === 0;
    await recordRow({ row: "rotation", verdict: ok ? "pass" : "fail", figures });
    assertEquals(rotation.code, 0, rotation.output);
    assertEquals(wrong, [], `generations answer 201 or 503: ${figures.join("\n")}`);
    assertEquals(failing, [], "every key signs afterwards");
    assert(made.length > 0);
  } finally {
    for (const n of nodes) await n.stop();
    await pg.stop();
  }
}
