/**
 * The data directory frozen (fsfreeze on a loop device) under load: `serve` with its SQLite
 * store there. A key the guests hold keeps signing; what needs the store (generation, a key not
 * opened yet) waits for the store's deadline and answers 503, never 404; once thawed, every key
 * signs.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { type RunningServer, startServer } from "../_command.ts";
import { apiClient } from "../_server.ts";
import { closedLoop, latencies, size, sleep, Tally } from "./_measure.ts";
import { mountLoop } from "./_loopfs.ts";
import { signer } from "./_serve.ts";
import { recordRow } from "./_report.ts";

/** Runs the scenario and records its row. */
export async function frozenDataDir(): Promise<void> {
  const fs = await mountLoop(64);
  const env = { KEYCELL_SIGNER: "worker", KEYCELL_SIGNER_INSTANCES: "1" };
  let server: RunningServer | undefined;
  try {
    const dataDir = `${fs.dir}/data`;
    // Keys made by one server; a second start holds none of them until it signs with one.
    server = await startServer({ dataDir, env });
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    let api = apiClient(server, token);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
      assertEquals(res.status, 201);
      ids.push((await res.json()).id);
    }
    assertEquals(await server.stop(), 0);
    server = await startServer({ dataDir, env });
    api = apiClient(server, token);
    const [cachedId, ...notOpened] = ids;
    const url = server.url;
    const signCached = signer(url, token, cachedId);
    assertEquals(await signCached(), "200");

    const freezeMs = size(6_000, 15_000);
    const cached = new Tally();
    const needsStore = new Tally((k) => k.endsWith(" 200") || k.endsWith(" 201"));
    const made: string[] = [];
    let stopping = false;
    await fs.freeze();
    const frozenAt = performance.now();
    const cachedLoad = closedLoop(2, () => signCached(), () => stopping, cached);
    const storeLoad = closedLoop(2, async (client) => {
      if (client === 0) {
        const res = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
        if (res.status === 201) made.push((await res.json()).id);
        else await res.body?.cancel();
        return `generate ${res.status}`;
      }
      const id = notOpened.shift();
      if (id === undefined) return "none left";
      notOpened.push(id);
      return `sign ${await signer(url, token, id)()}`;
    }, () => stopping, needsStore);
    await sleep(freezeMs);
    await fs.thaw();
    const frozenFor = performance.now() - frozenAt;
    stopping = true;
    await Promise.all([cachedLoad, storeLoad]);

    // Thawed: every key signs, those made during the freeze included.
    const after: string[] = [];
    for (const id of [...ids, ...made]) after.push(await signer(url, token, id)());
    const figures = [
      `frozen ${(frozenFor / 1000).toFixed(1)} s (the store's deadline is 5 s)`,
      `a key the guest holds, 2 clients: ${cached.describe()}, ${latencies(cached.good)}`,
      `generation and keys not opened yet, 2 clients: ${needsStore.describeTimes()}`,
      `after the thaw: ${after.filter((s) => s === "200").length} of ${after.length} keys sign (${made.length} made during the freeze)`,
    ];
    const typed = Object.keys(needsStore.counts).every((k) => /^(generate 201|sign 200|\w+ 503)$/.test(k));
    const ok = cached.failures === 0 && typed && after.every((s) => s === "200");
    const slowest = Math.max(...needsStore.other);
    const note = slowest > 7_500 ? `the slowest 503 came after ${(slowest / 1000).toFixed(1)} s, more than the store's deadline of 5 s a request` : undefined;
    await recordRow({ row: "freeze", verdict: ok ? "pass" : "fail", figures, note });
    assertEquals(cached.failures, 0, `cached keys keep signing: ${cached.describe()}`);
    assert(typed, `only 503 for what needs the store: ${needsStore.describe()}`);
    assert(needsStore.failures > 0, `the freeze was felt: ${needsStore.describe()}`);
    assertEquals(after.filter((s) => s !== "200"), [], "every key signs after the thaw");
  } finally {
    await fs.thaw();
    await server?.stop();
    await fs.close();
  }
}
