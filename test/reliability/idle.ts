/**
 * Idle connections and slowloris beside a signing client: `serve` holds thousands of connections
 * that send nothing, and hundreds that send a request a byte at a time (headers, or a body that
 * never ends), while one client signs. The server must stay alive, the signer keep signing, and
 * descriptors and memory come back once the connections go.
 *
 * Memory is read twice over: the V8 heap after a full collection (through the inspector), which
 * must come back to its baseline, and resident memory after a second round of the same
 * connections, which must not grow past what the first left. What the first round leaves above
 * the baseline is native memory the allocator keeps for reuse, not lost: the second round shows
 * it reused.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { memoryAfterCollection, type MemoryUsage } from "../_inspector.ts";
import { after, closedLoop, descriptors, latencies, mib, quantile, rssKib, size, sleep, type Tally } from "./_measure.ts";
import { serveWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const encoder = new TextEncoder();
const MIB = 1024 * 1024;

/** Runs the scenario and records its row. */
export async function idleAndSlowloris(): Promise<void> {
  const idle = size(500, 5_000);
  const slow = size(50, 500);
  const { server, sign, token, key } = await serveWithKey({ KEYCELL_SIGNER: "worker" }, { openFiles: idle + slow + 1_024, inspect: true });
  const { hostname, port } = new URL(server.url);
  const conns: Deno.Conn[] = [];
  const memory = async (): Promise<MemoryUsage & { treeKib: number }> => ({ ...await memoryAfterCollection(server.inspector!), treeKib: rssKib(server.pid) });

  /** Holds the connections for `ms` beside a signing client; answers what it saw, then closes them. */
  const round = async (ms: number) => {
    for (let i = 0; i < idle; i++) conns.push(await Deno.connect({ hostname, port: Number(port) }));
    // Half send headers a byte at a time; half a signing request whose body never ends.
    const trickles = Array.from({ length: slow }, (_, i) =>
      i % 2 === 0
        ? `POST /v1/keys/${key.id}/sign HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\nX-Slow: ${"a".repeat(4_000)}`
        : `POST /v1/keys/${key.id}/sign HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"algorithm":"${"E".repeat(100_000)}`
    );
    const slowConns: Deno.Conn[] = [];
    for (let i = 0; i < slow; i++) slowConns.push(await Deno.connect({ hostname, port: Number(port) }));
    conns.push(...slowConns);
    const stop = after(ms);
    const open = new Set(slowConns.keys());
    let cutByServer = 0;
    const trickling = (async () => {
      // One byte per slow connection every 500 ms, spread over the interval.
      for (let at = 0; !stop(); at++) {
        const started = performance.now();
        for (const i of open) {
          try {
            await slowConns[i].write(encoder.encode(trickles[i][at % trickles[i].length]));
          } catch {
            open.delete(i);
            cutByServer++;
          }
        }
        await sleep(Math.max(0, 500 - (performance.now() - started)));
      }
    })();
    const during = await closedLoop(1, () => sign(), stop);
    await trickling;
    const held = { fds: descriptors(server.pid), rssKib: rssKib(server.pid) };
    for (const conn of conns.splice(0)) conn.close();
    // Descriptors go as the server sees each close: wait until they stop falling.
    let fds = descriptors(server.pid);
    for (let i = 0; i < 100 && fds > baseline.fds; i++) {
      await sleep(100);
      fds = descriptors(server.pid);
    }
    await closedLoop(1, () => sign(), after(1_000));
    return { during, cutByServer, held, fds, rssKib: rssKib(server.pid) };
  };

  // Warm, then the baseline: one signing client alone.
  await closedLoop(1, () => sign(), after(size(500, 3_000)));
  const baseline = { fds: descriptors(server.pid), ...await memory() };
  try {
    const alone = await closedLoop(1, () => sign(), after(size(1_000, 10_000)));
    const loadMs = size(3_000, 30_000);
    const first = await round(loadMs);
    const alive = await fetch(`${server.url}/healthz`).then(async (r) => (await r.body?.cancel(), r.status), () => 0);
    const afterFirst = await memory();
    const secondMs = size(2_000, 10_000);
    const second = await round(secondMs);
    const afterSecond = await memory();

    const heap = (m: MemoryUsage) => `heap ${mib(m.heapUsed / 1024)} used of ${mib(m.heapTotal / 1024)}`;
    const ratio = (t: Tally) => (quantile(t.good, 0.99) / quantile(alone.good, 0.99)).toFixed(2);
    const figures = [
      `${idle} idle + ${slow} slowloris connections (half trickling headers, half a body) for ${loadMs / 1000} s, then again for ${secondMs / 1000} s`,
      `signing client alone: ${latencies(alone.good)}; during: ${latencies(first.during.good)} (p99 ratio ${ratio(first.during)}); failures ${first.during.failures} (${first.during.describe()})`,
      `slowloris connections the server cut meanwhile: ${first.cutByServer} of ${slow} (Deno.serve has no header or idle timeout: README, "Limits"); /healthz after: ${alive}`,
      `descriptors: baseline ${baseline.fds}, during ${first.held.fds}, after ${first.fds}; after the second round ${second.fds}`,
      `RSS: baseline ${mib(baseline.treeKib)}, during ${mib(first.held.rssKib)}, at once after ${mib(first.rssKib)}, after a full GC ${mib(afterFirst.treeKib)}; ` +
      `second round: during ${mib(second.held.rssKib)}, after a full GC ${mib(afterSecond.treeKib)}`,
      `V8 after a full GC: baseline ${heap(baseline)}; after the first round ${heap(afterFirst)}; after the second ${heap(afterSecond)}`,
      `kept above the baseline after a full GC: ${mib(afterFirst.treeKib - baseline.treeKib)} of native memory the allocator holds for reuse (the second round ended ${mib(afterSecond.treeKib - afterFirst.treeKib)} from the first)`,
    ];
    const problems = [
      ...(alive !== 200 ? [`/healthz answered ${alive}`] : []),
      ...(first.during.failures + second.during.failures > 0 ? ["the signing client failed"] : []),
      ...(first.held.fds < baseline.fds + idle ? ["the server did not hold the connections"] : []),
      ...(Math.max(first.fds, second.fds) > baseline.fds + 5 ? ["descriptors not back to baseline"] : []),
      // Live objects only: what the connections left in the heap, past a few MiB of caches.
      ...(afterSecond.heapUsed > baseline.heapUsed * 1.25 + 4 * MIB ? ["the V8 heap not back to baseline after a full GC"] : []),
      // Reuse, not growth: a second round of the same connections ends where the first did.
      ...(afterSecond.treeKib > afterFirst.treeKib * 1.1 + 8 * 1024 ? ["RSS grew with a second round of the same connections"] : []),
    ];
    await recordRow({ row: "idle", verdict: problems.length === 0 ? "pass" : "fail", figures, note: problems.join("; ") || undefined });
    assertEquals(alive, 200, "the server is alive");
    assert(problems.length === 0, `${problems.join("\n")}\n${figures.join("\n")}`);
  } finally {
    for (const conn of conns) conn.close();
    assertEquals(await server.stop(), 0);
  }
}
