/**
 * Idle connections and slowloris beside a signing client: thousands of connections that send
 * nothing, and hundreds that send a request a byte at a time (headers, or a body that never ends),
 * while one client signs. The server must stay alive and the signer keep signing; the connection
 * cap (KEYCELL_MAX_CONNECTIONS) closes at once those past it, the header timeout closes the idle
 * and header-trickling ones, the body timeout answers the body-trickling ones 408 and closes them;
 * descriptors and memory come back once the connections go. At full size `serve` runs with its
 * defaults (cap 4096, 10 s timeouts), which 5,500 connections over 30 s exceed; the short run
 * scales both down.
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
import { DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS } from "../../src/deno/http_listener.ts";

const encoder = new TextEncoder();
const MIB = 1024 * 1024;

/** A connection the scenario opened, and whether (and how soon) the server closed it. */
interface Watched {
  conn: Deno.Conn;
  /** Milliseconds from the connect to the server's close; undefined while open. */
  closedAfterMs?: number;
}

/** Reads `conn` until the server closes it (its 408 answers are read and dropped), noting when. */
function watch(conn: Deno.Conn, closing: () => boolean): Watched {
  const watched: Watched = { conn };
  const opened = performance.now();
  (async () => {
    const buffer = new Uint8Array(1024);
    try {
      while (await conn.read(buffer) !== null);
    } catch {
      // reset by the server, or closed here
    }
    if (!closing()) watched.closedAfterMs = performance.now() - opened;
  })();
  return watched;
}

/** Runs the scenario and records its row. */
export async function idleAndSlowloris(): Promise<void> {
  const idle = size(500, 5_000);
  const slow = size(50, 500);
  // Full size: serve's defaults. Short: a cap and timeouts the short rounds reach.
  const cap = size(400, DEFAULT_MAX_CONNECTIONS);
  const timeoutMs = size(1_000, DEFAULT_HEADER_TIMEOUT_MS);
  const env = {
    KEYCELL_SIGNER: "worker",
    KEYCELL_MAX_CONNECTIONS: String(cap),
    KEYCELL_HEADER_TIMEOUT_MS: String(timeoutMs),
    KEYCELL_BODY_TIMEOUT_MS: String(timeoutMs),
  };
  const { server, sign, token, key } = await serveWithKey(env, { openFiles: idle + slow + 1_024, inspect: true });
  const { hostname, port } = new URL(server.url);
  const conns: Watched[] = [];
  let closing = false;
  const memory = async (): Promise<MemoryUsage & { treeKib: number }> => ({ ...await memoryAfterCollection(server.inspector!), treeKib: rssKib(server.pid) });
  const connect = async () => watch(await Deno.connect({ hostname, port: Number(port) }), () => closing);

  /** Holds the connections for `ms` beside a signing client; answers what it saw, then closes them. */
  const round = async (ms: number) => {
    closing = false;
    // The slow ones first, so that the header and body timeouts, not the cap, are what meets them.
    const trickles = Array.from({ length: slow }, (_, i) =>
      i % 2 === 0
        ? `POST /v1/keys/${key.id}/sign HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\nX-Slow: ${"a".repeat(4_000)}`
        : `POST /v1/keys/${key.id}/sign HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"algorithm":"${"E".repeat(100_000)}`
    );
    const slowConns: Watched[] = [];
    for (let i = 0; i < slow; i++) slowConns.push(await connect());
    const idleConns: Watched[] = [];
    for (let i = 0; i < idle; i++) idleConns.push(await connect());
    conns.push(...slowConns, ...idleConns);
    const stop = after(ms);
    const open = new Set(slowConns.keys());
    let cutByServer = 0;
    let peakFds = descriptors(server.pid);
    const trickling = (async () => {
      // One byte per slow connection every 500 ms, spread over the interval.
      for (let at = 0; !stop(); at++) {
        const started = performance.now();
        peakFds = Math.max(peakFds, descriptors(server.pid));
        for (const i of open) {
          try {
            await slowConns[i].conn.write(encoder.encode(trickles[i][at % trickles[i].length]));
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
    const closedBy = (list: Watched[]) => list.filter((w) => w.closedAfterMs !== undefined);
    // Closed within a second of connecting: refused by the cap, not timed out.
    const refused = closedBy(idleConns).filter((w) => w.closedAfterMs! < Math.min(1_000, timeoutMs / 2)).length;
    const seen = { idleClosed: closedBy(idleConns).length, slowClosed: closedBy(slowConns).length, refused, peakFds };
    closing = true;
    for (const { conn } of conns.splice(0)) conn.close();
    // Descriptors go as the server sees each close: wait until they stop falling.
    let fds = descriptors(server.pid);
    for (let i = 0; i < 100 && fds > baseline.fds; i++) {
      await sleep(100);
      fds = descriptors(server.pid);
    }
    await closedLoop(1, () => sign(), after(1_000));
    return { during, cutByServer, held, seen, fds, rssKib: rssKib(server.pid) };
  };

  // Warm, then the baseline: one signing client alone.
  await closedLoop(1, () => sign(), after(size(500, 3_000)));
  const baseline = { fds: descriptors(server.pid), ...await memory() };
  try {
    const alone = await closedLoop(1, () => sign(), after(size(1_000, 10_000)));
    // Three times the timeouts: every connection meets one within the round.
    const loadMs = timeoutMs * 3;
    const first = await round(loadMs);
    const alive = await fetch(`${server.url}/healthz`).then(async (r) => (await r.body?.cancel(), r.status), () => 0);
    const afterFirst = await memory();
    const secondMs = size(2_000, 10_000);
    const second = await round(secondMs);
    const afterSecond = await memory();

    const heap = (m: MemoryUsage) => `heap ${mib(m.heapUsed / 1024)} used of ${mib(m.heapTotal / 1024)}`;
    const ratio = (t: Tally) => (quantile(t.good, 0.99) / quantile(alone.good, 0.99)).toFixed(2);
    const { seen } = first;
    const figures = [
      `${idle} idle + ${slow} slowloris connections (half trickling headers, half a body; opened first) for ${loadMs / 1000} s, then again for ${secondMs / 1000} s; ` +
      `KEYCELL_MAX_CONNECTIONS ${cap}, header and body timeouts ${timeoutMs / 1000} s${size(" (the short run's)", " (serve's defaults)")}`,
      `signing client alone: ${latencies(alone.good)}; during: ${latencies(first.during.good)} (p99 ratio ${ratio(first.during)}); failures ${first.during.failures} (${first.during.describe()})`,
      `closed by the server within the round: slowloris ${seen.slowClosed} of ${slow} (writes refused ${first.cutByServer}); idle ${seen.idleClosed} of ${idle}, ` +
      `${seen.refused} of them at once (the cap), the rest by the header timeout; /healthz after: ${alive}`,
      `descriptors: baseline ${baseline.fds}, at most ${seen.peakFds} during, ${first.held.fds} at the round's end, after ${first.fds}; after the second round ${second.fds}`,
      `RSS: baseline ${mib(baseline.treeKib)}, at the round's end ${mib(first.held.rssKib)}, at once after ${mib(first.rssKib)}, after a full GC ${mib(afterFirst.treeKib)}; ` +
      `second round: at its end ${mib(second.held.rssKib)}, after a full GC ${mib(afterSecond.treeKib)}`,
      `V8 after a full GC: baseline ${heap(baseline)}; after the first round ${heap(afterFirst)}; after the second ${heap(afterSecond)}`,
      `kept above the baseline after a full GC: ${mib(afterFirst.treeKib - baseline.treeKib)} of native memory the allocator holds for reuse (the second round ended ${mib(afterSecond.treeKib - afterFirst.treeKib)} from the first)`,
    ];
    const problems = [
      ...(alive !== 200 ? [`/healthz answered ${alive}`] : []),
      ...(first.during.failures + second.during.failures > 0 ? ["the signing client failed"] : []),
      // The cap holds: the server's descriptors stay within it (and the few it keeps for itself).
      ...(seen.peakFds > baseline.fds + cap ? [`the server held ${seen.peakFds} descriptors, past the cap of ${cap} connections`] : []),
      ...(idle + slow > cap && seen.refused === 0 ? ["no connection was refused at the cap"] : []),
      // The timeouts hold: by the round's end (three times the timeout) every connection is closed.
      ...(seen.slowClosed < slow ? [`${slow - seen.slowClosed} slowloris connections still open at the round's end`] : []),
      ...(seen.idleClosed < idle ? [`${idle - seen.idleClosed} idle connections still open at the round's end`] : []),
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
    closing = true;
    for (const { conn } of conns) conn.close();
    assertEquals(await server.stop(), 0);
  }
}
