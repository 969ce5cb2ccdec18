/**
 * Clients that cost memory: bodies sent one byte per chunk past KEYCELL_MAX_BODY_BYTES, clients
 * that pipeline requests and never read an answer, on HTTP and on Keyless (from
 * test/reliability/_hostile.ts, a process of their own), and one Keyless connection with 3,000
 * requests written at once. Resident memory must stay within what the limits allow (bodies up to the body
 * limit, answers up to KEYCELL_KEYSERVER_MAX_PENDING per connection), and a well-behaved client
 * beside them is never cut; on HTTP its p99 should stay within 3x its unloaded p99 (the row's
 * verdict says; latencies are never asserted).
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { KeylessClient } from "../../src/keyless/client.ts";
import { after, closedLoop, latencies, mib, quantile, rssKib, size, sleep, Tally } from "./_measure.ts";
import { keylessProtocol, LoadConnection } from "./_pipeline.ts";
import { keylessSign, keyserverWithKey, serveWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const MAX_PENDING = 1024;
const HOSTILE = new URL("./_hostile.ts", import.meta.url).pathname;

/** Samples a process tree's RSS until `done` settles; answers the peak. */
async function peakWhile(pid: number, done: Promise<unknown>): Promise<number> {
  let peak = rssKib(pid);
  let finished = false;
  done.finally(() => finished = true);
  while (!finished) {
    peak = Math.max(peak, rssKib(pid));
    await sleep(100);
  }
  return Math.max(peak, rssKib(pid));
}

/** Runs the scenario and records its row. */
export async function memoryBounds(): Promise<void> {
  const figures: string[] = [];
  const problems: string[] = [];
  const slow: string[] = [];

  // HTTP: chunked bodies a byte at a time past the body limit, and clients that never read.
  // The hostile clients have a token of their own, as they would: tokens take turns for the guests.
  const http = await serveWithKey({ KEYCELL_SIGNER: "worker" }, { tokens: ["well-behaved", "hostile"] });
  try {
    const chunkers = size(4, 50);
    const nonReaders = size(20, 200);
    await closedLoop(1, () => http.sign(), after(500));
    const alone = await closedLoop(1, () => http.sign(), after(size(1_000, 5_000)));
    figures.push(`HTTP, the well-behaved client alone: ${latencies(alone.good)}`);
    const baseline = rssKib(http.server.pid);
    // Each kind of client in turn, in a process of its own, with a well-behaved client signing beside it.
    const phase = async (what: string, kind: "chunks" | "non-readers", count: number, holdMs = 0, why = "") => {
      const wellBehaved = new Tally();
      let stopping = false;
      const signing = closedLoop(1, () => http.sign(), () => stopping, wellBehaved);
      const clients = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-net", HOSTILE, kind, http.server.url, http.tokens.hostile, http.key.id, String(count), String(holdMs)],
        stdout: "piped",
      }).output();
      const peak = await peakWhile(http.server.pid, clients);
      stopping = true;
      await signing;
      const outcomes: string[] = JSON.parse(new TextDecoder().decode((await clients).stdout));
      const kinds = [...new Set(outcomes)].map((k) => `${k} x${outcomes.filter((o) => o === k).length}`).join(", ");
      const ratio = quantile(wellBehaved.good, 0.99) / quantile(alone.good, 0.99);
      figures.push(
        `HTTP, ${what}: ${kinds}; RSS ${mib(baseline)} -> peak ${mib(peak)}; the well-behaved client meanwhile ${wellBehaved.describe()}, ` +
          `${latencies(wellBehaved.good)}: **p99 ${ratio.toFixed(2)}x** unloaded`,
      );
      assertEquals(outcomes.length, count, `HTTP, ${what}: every client came back`);
      if (wellBehaved.failures > 0) problems.push(`HTTP, ${what}: the well-behaved client failed ${wellBehaved.describe()}`);
      // A latency: in the verdict, never asserted.
      if (!(ratio <= 3)) slow.push(`HTTP, ${what.split(" ").slice(1, 5).join(" ")}: the well-behaved client's p99 ${ratio.toFixed(2)}x its unloaded p99${why}`);
      if (peak - baseline > 512 * 1024) problems.push(`HTTP, ${what}: RSS grew ${mib(peak - baseline)}`);
    };
    await phase(`${chunkers} bodies in 1-byte chunks to twice KEYCELL_MAX_BODY_BYTES (64 KiB)`, "chunks", chunkers);
    const holdMs = size(2_000, 10_000);
    // Every request is a valid signature the server owes an answer to, and the answers fit in the
    // sockets' buffers; the well-behaved client's token takes turns with theirs.
    const why = ` (${nonReaders * 1_000} valid signing requests of another token)`;
    await phase(`${nonReaders} clients writing 1000 requests each and never reading, connected ${holdMs / 1000} s`, "non-readers", nonReaders, holdMs, why);
  } finally {
    assertEquals(await http.server.stop(), 0);
  }

  // Keyless: 3,000 requests written at once on one connection, and connections that never read.
  const ks = await keyserverWithKey({ env: { KEYCELL_KEYSERVER_MAX_PENDING: String(MAX_PENDING) } });
  const wellBehavedClient = new KeylessClient(await ks.connect());
  try {
    // The burst alone first: what it needs, and that each of the 3,000 is signed.
    const protocol = keylessProtocol(ks.connect, ks.ski);
    await closedLoop(1, () => keylessSign(wellBehavedClient, ks.ski), after(500));
    const alone = await closedLoop(1, () => keylessSign(wellBehavedClient, ks.ski), after(size(1_000, 5_000)));
    const before = rssKib(ks.keyserver.pid);
    const pipelined = new Tally();
    const burst = (async () => {
      const c = new LoadConnection(protocol, pipelined, { timeoutMs: 120_000 });
      await c.open();
      await c.send(3_000);
      while (c.outstanding > 0 && !c.isClosed) await Promise.race([c.answered(), sleep(100)]);
      c.close();
    })();
    const burstPeak = await peakWhile(ks.keyserver.pid, burst);
    const baseline = rssKib(ks.keyserver.pid);
    const wellBehaved = new Tally();
    let stopping = false;
    const signing = closedLoop(1, () => keylessSign(wellBehavedClient, ks.ski), () => stopping, wellBehaved);
    const nonReaders = size(20, 100);
    const hostile = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", HOSTILE, "keyless-non-readers", ks.address, ks.ski.toHex(), String(nonReaders)],
      stdout: "piped",
    }).output();
    const peak = await peakWhile(ks.keyserver.pid, hostile);
    const written: number[] = JSON.parse(new TextDecoder().decode((await hostile).stdout));
    assertEquals(written.length, nonReaders, "Keyless: every non-reading client came back");
    stopping = true;
    await signing;
    const growth = peak - baseline;
    const ratio = quantile(wellBehaved.good, 0.99) / quantile(alone.good, 0.99);
    figures.push(
      `Keyless, the well-behaved client alone: ${latencies(alone.good)}`,
      `Keyless: 3,000 requests written at once on one connection: ${pipelined.describe()}, RSS ${mib(before)} -> peak ${mib(burstPeak)}`,
      `Keyless: ${nonReaders} connections writing requests and never reading ` +
        `(KEYCELL_KEYSERVER_MAX_PENDING=${MAX_PENDING}): ${Math.min(...written)}-${Math.max(...written)} requests each written before the server stopped reading`,
      `Keyless: RSS ${mib(baseline)} -> peak ${mib(peak)} (+${mib(growth)}); the well-behaved client meanwhile ${wellBehaved.describe()}, ` +
        `${latencies(wellBehaved.good)}: **p99 ${ratio.toFixed(2)}x** unloaded`,
    );
    // Each answered, signed or refused (INTERNAL, when it would wait past the queue's deadline).
    if (pipelined.total !== 3_000 || Object.keys(pipelined.counts).some((k) => k !== "ok" && k !== "internal")) {
      problems.push(`Keyless: the 3,000 pipelined requests got ${pipelined.describe()}`);
    }
    if (wellBehaved.failures > 0) problems.push(`Keyless: the well-behaved client failed ${wellBehaved.describe()}`);
    if (growth > 512 * 1024) problems.push(`Keyless: RSS grew ${mib(growth)}`);
    // A latency: in the verdict, never asserted.
    if (!(ratio <= 3)) slow.push(`Keyless, connections never reading: the well-behaved client's p99 ${ratio.toFixed(2)}x its unloaded p99`);
  } finally {
    wellBehavedClient.close();
    assertEquals(await ks.keyserver.stop(), 0);
  }
  const verdict = problems.length === 0 && slow.length === 0 ? "pass" : "fail";
  await recordRow({ row: "memory", verdict, figures, note: [...problems, ...slow].join("; ") || undefined });
  assert(problems.length === 0, `${problems.join("\n")}\n${figures.join("\n")}`);
}
