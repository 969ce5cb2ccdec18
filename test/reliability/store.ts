/**
 * The key store failing under load. PostgreSQL stopped and started while clients generate, sign
 * and read keys; and a SQLite data directory on a loop device that fills up, then is remounted
 * read-only, while keys are generated. What needs the store answers 503, never 404 or a wrong
 * answer; keys the guests hold keep signing; afterwards every key listed and every key answered
 * 201 signs (no half-written key).
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { type RunningServer, startServer } from "../_command.ts";
import { startTestPostgres } from "../_postgres_server.ts";
import { type Api, apiClient } from "../_server.ts";
import { tempDir } from "../_temp.ts";
import { closedLoop, size, sleep, Tally } from "./_measure.ts";
import { loopUnavailable, mountLoop } from "./_loopfs.ts";
import { listAll, signer } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const ANSWERS = /^(generate (201|503)|sign (200|503)|get (200|503))$/;

/** Clients generating, signing and reading keys until `stop()`; the keys answered 201 land in `made`. */
function mixedLoad(server: RunningServer, token: string, api: Api, made: string[], stop: () => boolean, tally: Tally) {
  return closedLoop(3, async (client) => {
    if (client === 0) {
      const res = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
      if (res.status === 201) made.push((await res.json()).id);
      else await res.body?.cancel();
      await sleep(20);
      return `generate ${res.status}`;
    }
    const id = made[Math.floor(Math.random() * made.length)];
    if (client === 1) return `sign ${await signer(server.url, token, id)()}`;
    const res = await api("GET", `/v1/keys/${id}`);
    await res.body?.cancel();
    return `get ${res.status}`;
  }, stop, tally);
}

/** Every key the server lists, and every one in `made`, signs: the count of those that do not. */
async function unsigned(server: RunningServer, token: string, api: Api, made: string[]): Promise<{ listed: number; failing: string[] }> {
  const listed = await listAll(api).catch((err) => {
    throw new Error(`listing the keys failed; the server's last lines:\n${server.lines.slice(-40).join("\n")}`, { cause: err });
  });
  const failing: string[] = [];
  for (const id of new Set([...listed, ...made])) {
    const status = await signer(server.url, token, id)();
    if (status !== "200") failing.push(`${id}: ${status}`);
  }
  return { listed: listed.length, failing };
}

/** Starts `serve` and makes a few keys. */
async function serveWithKeys(dataDir: string, env: Record<string, string>) {
  const server = await startServer({ dataDir, env });
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const api = apiClient(server, token);
  const made: string[] = [];
  for (let i = 0; i < 5; i++) {
    const res = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
    assertEquals(res.status, 201);
    made.push((await res.json()).id);
  }
  return { server, token, api, made };
}

/** Runs the scenario and records its row. */
export async function storeFailures(): Promise<void> {
  const figures: string[] = [];
  const problems: string[] = [];

  // PostgreSQL stopped and started under load.
  const pg = await startTestPostgres();
  const pgDir = await tempDir("keycell-reliability-pg-");
  const running = await serveWithKeys(pgDir, { KEYCELL_SIGNER: "worker", KEYCELL_STORE: "postgres", KEYCELL_POSTGRES_URL: pg.url });
  try {
    const { server, token, api, made } = running;
    const before = made.length;
    const phases: Record<string, Tally> = { before: new Tally(), outage: new Tally(), after: new Tally() };
    for (const [phase, ms] of [["before", size(500, 3_000)], ["outage", size(1_500, 10_000)], ["after", size(1_000, 5_000)]] as const) {
      if (phase === "outage") await pg.halt();
      if (phase === "after") await pg.resume();
      await mixedLoad(server, token, api, made, (() => {
        const end = performance.now() + ms;
        return () => performance.now() >= end;
      })(), phases[phase]);
    }
    const check = await unsigned(server, token, api, made);
    figures.push(
      `PostgreSQL stopped ${size(1.5, 10)} s under 3 clients (generate, sign, get): before ${phases.before.describe()}; ` +
        `stopped ${phases.outage.describeTimes()}; started again ${phases.after.describe()}`,
      `afterwards ${check.listed} keys listed, ${made.length - before} made under load; not signing: ${check.failing.length}`,
    );
    for (const [phase, tally] of Object.entries(phases)) {
      const wrong = Object.keys(tally.counts).filter((k) => !ANSWERS.test(k));
      if (wrong.length) problems.push(`PostgreSQL ${phase}: ${wrong.join(", ")}`);
    }
    if (check.failing.length) problems.push(`PostgreSQL: keys that do not sign: ${check.failing.join(", ")}`);
    if (phases.after.failures > 0 && Object.keys(phases.after.counts).some((k) => k.endsWith("503"))) {
      figures.push("(503s just after the start: the store's connections come back)");
    }
  } finally {
    await running.server.stop();
    await pg.stop();
  }

  // A SQLite data directory that fills up, then turns read-only, during generation.
  const noLoop = loopUnavailable();
  if (noLoop !== undefined) {
    figures.push(`data directory full or read-only: not run here (${noLoop})`);
  } else {
    const fs = await mountLoop(64);
    let server: RunningServer | undefined;
    try {
      const started = await serveWithKeys(`${fs.dir}/data`, { KEYCELL_SIGNER: "worker" });
      server = started.server;
      const { token, api, made } = started;
      const phases: [string, () => Promise<void>][] = [
        ["full", () => fs.fill()],
        ["space again", () => fs.unfill()],
        ["read-only", () => fs.readOnly()],
        ["writable again", () => fs.readWrite()],
      ];
      for (const [phase, change] of phases) {
        await change();
        const tally = new Tally();
        const end = performance.now() + size(700, 5_000);
        await mixedLoad(server, token, api, made, () => performance.now() >= end, tally);
        figures.push(`data directory ${phase}: ${tally.describe()}`);
        const wrong = Object.keys(tally.counts).filter((k) => !ANSWERS.test(k));
        if (wrong.length) problems.push(`${phase}: ${wrong.join(", ")}`);
        if (phase === "full" || phase === "read-only") {
          if (!tally.counts["generate 503"]) problems.push(`${phase}: no generation was refused (the fault was not felt)`);
        }
      }
      const check = await unsigned(server, token, api, made);
      figures.push(`afterwards ${check.listed} keys listed; not signing: ${check.failing.length}`);
      if (check.failing.length) problems.push(`loop: keys that do not sign: ${check.failing.join(", ")}`);
      // The same keys after a restart: nothing half-written in the store either.
      assertEquals(await server.stop(), 0);
      server = await startServer({ dataDir: `${fs.dir}/data`, env: { KEYCELL_SIGNER: "worker" } });
      const again = await unsigned(server, token, apiClient(server, token), made);
      figures.push(`after a restart: ${again.listed} keys listed; not signing: ${again.failing.length}`);
      if (again.failing.length) problems.push(`after a restart: keys that do not sign: ${again.failing.join(", ")}`);
    } finally {
      await fs.readWrite().catch(() => {});
      await server?.stop();
      await fs.close();
    }
  }
  await recordRow({ row: "store", verdict: problems.length === 0 ? "pass" : "fail", figures, note: problems.join("; ") || undefined });
  assert(problems.length === 0, `${problems.join("\n")}\n${figures.join("\n")}`);
}
