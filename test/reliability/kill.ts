/**
 * kill -9 of the key server under load: `serve` in process mode with clients signing all along,
 * its key server killed without warning. Only the requests in flight at the kill may fail, and
 * as 503; `serve` starts a new key server and signs again; every key made before signs after.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { closedLoop, ms, processTree, size, sleep, Tally } from "./_measure.ts";
import { serveWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const CLIENTS = 4;

/** Runs the scenario and records its row. */
export async function killKeyserver(): Promise<void> {
  const { server, api, sign } = await serveWithKey({ KEYCELL_SIGNER: "process" });
  try {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await api("POST", "/v1/keys", { keySpec: i % 2 ? "ECC_NIST_P384" : "ECC_NIST_P256" });
      assertEquals(res.status, 201);
      ids.push((await res.json()).id);
    }
    const kills = size(1, 3);
    const tally = new Tally();
    // When each request started and how it ended.
    const outcomes: { at: number; end: number; kind: string }[] = [];
    let stopping = false;
    const load = closedLoop(CLIENTS, async () => {
      const at = performance.now();
      const kind = await sign();
      outcomes.push({ at, end: performance.now(), kind });
      return kind;
    }, () => stopping, tally);
    const recoveries: number[] = [];
    const killed: number[] = [];
    for (let k = 0; k < kills; k++) {
      await sleep(size(1_000, 3_000));
      const child = processTree(server.pid).find((pid) => pid !== server.pid);
      assert(child !== undefined, "serve has a key server child");
      const at = performance.now();
      Deno.kill(child, "SIGKILL");
      killed.push(child);
      // Until a request sent after the kill is signed: from the kill to its answer.
      const signedAfter = () => outcomes.find((o) => o.at > at && o.kind === "200");
      while (signedAfter() === undefined) await sleep(5);
      recoveries.push(signedAfter()!.end - at);
    }
    await sleep(1_000);
    stopping = true;
    await load;
    // Every key made before the kills signs after them.
    const digest = new Uint8Array(32).toBase64();
    const signs = await Promise.all(ids.map(async (id, i) => {
      const res = await api("POST", `/v1/keys/${id}/sign`, { algorithm: i % 2 ? "ECDSA_SHA_384" : "ECDSA_SHA_256", messageType: "DIGEST", message: i % 2 ? new Uint8Array(48).toBase64() : digest });
      await res.body?.cancel();
      return res.status;
    }));
    const figures = [
      `${kills} kill -9 of the key server under ${CLIENTS} signing clients: ${tally.describe()}`,
      `failed: ${tally.failures} (at most ${CLIENTS} a kill can catch in flight: ${CLIENTS * kills})`,
      `first signature after each kill: ${recoveries.map(ms).join(", ")}`,
      `keys made before the kills that sign after: ${signs.filter((s) => s === 200).length} of ${ids.length}`,
    ];
    const ok = tally.failures <= CLIENTS * kills && signs.every((s) => s === 200) && recoveries.every((r) => r < 1_000);
    const slow = recoveries.some((r) => r >= 1_000);
    await recordRow({
      row: "kill",
      verdict: ok ? "pass" : "fail",
      figures,
      note: slow ? "the next request starts a new key server: a Deno process start, which takes longer on a loaded machine" : undefined,
    });
    assert(tally.failures <= CLIENTS * kills, `only requests in flight fail: ${figures.join("\n")}`);
    assert(Object.keys(tally.counts).every((k) => k === "200" || k === "503"), `failures are 503: ${tally.describe()}`);
    assertEquals(signs, ids.map(() => 200), "no key lost");
    assert(killed.every((pid) => !processTree(server.pid).includes(pid)), "a new key server took the killed one's place");
  } finally {
    assertEquals(await server.stop(), 0);
  }
}
