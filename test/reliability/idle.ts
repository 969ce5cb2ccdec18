/**
 * Idle connections and slowloris beside a signing client: `serve` holds thousands of connections
 * that send nothing, and hundreds that send a request a byte at a time (headers, or a body that
 * never ends), while one client signs. The server must stay alive, the signer keep signing, and
 * descriptors and resident memory come back once the connections go.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { after, closedLoop, descriptors, latencies, mib, quantile, rssKib, size, sleep } from "./_measure.ts";
import { serveWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const encoder = new TextEncoder();

/** Runs the scenario and records its row. */
export async function idleAndSlowloris(): Promise<void> {
  const idle = size(500, 5_000);
  const slow = size(50, 500);
  const { server, sign, token, key } = await serveWithKey({ KEYCELL_SIGNER: "worker" }, { openFiles: idle + slow + 1_024 });
  const { hostname, port } = new URL(server.url);
  const conns: Deno.Conn[] = [];
  let cutByServer = 0;
  try {
    // Warm, then the baseline: one signing client alone.
    await closedLoop(1, () => sign(), after(size(500, 3_000)));
    const baseline = { rss: rssKib(server.pid), fds: descriptors(server.pid) };
    const alone = await closedLoop(1, () => sign(), after(size(1_000, 10_000)));

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
    const loadMs = size(3_000, 30_000);
    const stop = after(loadMs);
    const open = new Set(slowConns.keys());
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
    const duringFds = descriptors(server.pid);
    const duringRss = rssKib(server.pid);
    const alive = await fetch(`${server.url}/healthz`).then(async (r) => (await r.body?.cancel(), r.status), () => 0);

    for (const conn of conns.splice(0)) conn.close();
    // Descriptors go as the server sees each close: wait until they stop falling.
    let fdsAfter = descriptors(server.pid);
    for (let i = 0; i < 100 && fdsAfter > baseline.fds; i++) {
      await sleep(100);
      fdsAfter = descriptors(server.pid);
    }
    await closedLoop(1, () => sign(), after(1_000));
    const rssAfter = rssKib(server.pid);
    const figures = [
      `${idle} idle + ${slow} slowloris connections (half trickling headers, half a body) for ${loadMs / 1000} s`,
      `signing client alone: ${latencies(alone.good)}; during: ${latencies(during.good)} (p99 ratio ${(quantile(during.good, 0.99) / quantile(alone.good, 0.99)).toFixed(2)}); failures ${during.failures} (${during.describe()})`,
      `slowloris connections the server cut meanwhile: ${cutByServer} of ${slow}; /healthz after: ${alive}`,
      `descriptors: baseline ${baseline.fds}, during ${duringFds}, after ${fdsAfter}`,
      `RSS: baseline ${mib(baseline.rss)}, during ${mib(duringRss)}, after ${mib(rssAfter)}`,
    ];
    const ok = alive === 200 && during.failures === 0 && fdsAfter <= baseline.fds + 5;
    // Descriptors come back; the heap grown for the connections is kept by V8, which a verdict says.
    const rssBack = rssAfter <= baseline.rss * 1.2;
    await recordRow({
      row: "idle",
      verdict: ok && rssBack ? "pass" : "fail",
      figures,
      note: rssBack ? undefined : `RSS not back to baseline: ${mib(rssAfter)} after, ${mib(baseline.rss)} before (descriptors are)`,
    });
    assertEquals(alive, 200, "the server is alive");
    assertEquals(during.failures, 0, figures.join("\n"));
    assert(duringFds >= baseline.fds + idle, `the server held the connections: ${figures.join("\n")}`);
    assert(fdsAfter <= baseline.fds + 5, `descriptors back to baseline: ${figures.join("\n")}`);
    assert(rssAfter < baseline.rss * 2 + 64 * 1024, `RSS back near baseline: ${figures.join("\n")}`);
  } finally {
    for (const conn of conns) conn.close();
    assertEquals(await server.stop(), 0);
  }
}

