/**
 * Clients that cost memory: bodies sent one byte per chunk past KEYCELL_MAX_BODY_BYTES, clients
 * that pipeline requests and never read an answer, and one Keyless connection with 3,000 requests
 * written at once. Resident memory must stay within what the limits allow (bodies up to the body
 * limit, answers up to KEYCELL_KEYSERVER_MAX_PENDING per connection), and a well-behaved client
 * beside them is never cut.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { KeylessClient } from "../../src/keyless/client.ts";
import { after, closedLoop, latencies, mib, rssKib, size, sleep, Tally } from "./_measure.ts";
import { httpProtocol, keylessProtocol, LoadConnection } from "./_pipeline.ts";
import { keylessSign, keyserverWithKey, serveWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const encoder = new TextEncoder();
const MAX_BODY = 64 * 1024;
const MAX_PENDING = 1024;

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

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
  const notes: string[] = [];

  // HTTP: chunked bodies a byte at a time past the body limit, and clients that never read.
  const http = await serveWithKey({ KEYCELL_SIGNER: "worker" });
  const held: Deno.Conn[] = [];
  try {
    const { hostname, port } = new URL(http.server.url);
    const chunkers = size(4, 50);
    const nonReaders = size(20, 200);
    await closedLoop(1, () => http.sign(), after(500));
    const baseline = rssKib(http.server.pid);
    // Each kind of client in turn, with a well-behaved client signing beside it.
    const phase = async (what: string, clients: Promise<string>[]) => {
      const wellBehaved = new Tally();
      let stopping = false;
      const signing = closedLoop(1, () => http.sign(), () => stopping, wellBehaved);
      const all = Promise.all(clients);
      const peak = await peakWhile(http.server.pid, all);
      const outcomes = await all;
      stopping = true;
      await signing;
      const kinds = [...new Set(outcomes)].map((k) => `${k} x${outcomes.filter((o) => o === k).length}`).join(", ");
      figures.push(`HTTP, ${what}: ${kinds}; RSS ${mib(baseline)} -> peak ${mib(peak)}; the well-behaved client meanwhile ${wellBehaved.describe()}, ${latencies(wellBehaved.good)}`);
      if (wellBehaved.failures > 0) problems.push(`HTTP, ${what}: the well-behaved client failed ${wellBehaved.describe()}`);
      const slowest = Math.max(...wellBehaved.good);
      if (slowest > 1_000) notes.push(`HTTP, ${what.split(" ").slice(1, 5).join(" ")}: not cut, but the well-behaved client waited up to ${(slowest / 1000).toFixed(1)} s`);
      if (peak - baseline > 512 * 1024) problems.push(`HTTP, ${what}: RSS grew ${mib(peak - baseline)}`);
    };
    await phase(`${chunkers} bodies in 1-byte chunks to twice KEYCELL_MAX_BODY_BYTES (64 KiB)`, Array.from({ length: chunkers }, async () => {
      const conn = await Deno.connect({ hostname, port: Number(port) });
      held.push(conn);
      await writeAll(conn, encoder.encode(
        `POST /v1/keys/${http.key.id}/sign HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${http.token}\r\n` +
          "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
      ));
      // A byte per chunk, 1 KiB of chunks per write, until twice the limit or an answer.
      const piece = encoder.encode("1\r\nx\r\n".repeat(1024));
      let answer = "";
      const buffer = new Uint8Array(4096);
      const reading = conn.read(buffer).then(
        (n) => answer = n === null ? "closed" : new TextDecoder().decode(buffer.subarray(0, n)).split("\r\n")[0].slice(9, 12),
        () => answer = "reset",
      );
      for (let sent = 0; sent < 2 * MAX_BODY && answer === ""; sent += 1024) {
        if (!await writeAll(conn, piece).then(() => true, () => false)) break;
      }
      await reading;
      return answer;
    }));
    await phase(`${nonReaders} clients writing ${size(100, 1_000)} requests each and never reading`, Array.from({ length: nonReaders }, async () => {
      const conn = await Deno.connect({ hostname, port: Number(port) });
      held.push(conn);
      const request = httpProtocol(http.server.url, http.token, http.key.id).request(0);
      const batch = new Uint8Array(request.length * 100);
      for (let i = 0; i < 100; i++) batch.set(request, i * request.length);
      let written = 0;
      while (written < size(100, 1_000)) {
        const wrote = await Promise.race([writeAll(conn, batch).then(() => true, () => false), sleep(500).then(() => false)]);
        if (!wrote) break;
        written += 100;
      }
      return written === size(100, 1_000) ? "all written" : "the server stopped reading";
    }));
  } finally {
    for (const c of held) c.close();
    assertEquals(await http.server.stop(), 0);
  }

  // Keyless: 3,000 requests written at once on one connection, and connections that never read.
  const ks = await keyserverWithKey({ env: { KEYCELL_KEYSERVER_MAX_PENDING: String(MAX_PENDING) } });
  const conns: Deno.Conn[] = [];
  const wellBehavedClient = new KeylessClient(await ks.connect());
  try {
    // The burst alone first: what it needs, and that each of the 3,000 is signed.
    const protocol = keylessProtocol(ks.connect, ks.ski);
    await closedLoop(1, () => keylessSign(wellBehavedClient, ks.ski), after(500));
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
    const frames = (count: number) => {
      const frameBytes = protocol.request(1).length;
      const bytes = new Uint8Array(frameBytes * count);
      for (let i = 0; i < count; i++) bytes.set(protocol.request(i + 1), i * frameBytes);
      return bytes;
    };
    const batch = frames(1_000);
    const nonReading = Array.from({ length: nonReaders }, async () => {
      const conn = await ks.connect();
      conns.push(conn);
      let written = 0;
      for (let i = 0; i < 20; i++) {
        const wrote = await Promise.race([writeAll(conn, batch).then(() => true, () => false), sleep(500).then(() => false)]);
        if (!wrote) break;
        written += 1_000;
      }
      return written;
    });
    const everything = Promise.all(nonReading);
    const peak = await peakWhile(ks.keyserver.pid, everything);
    const written = await everything;
    stopping = true;
    await signing;
    const growth = peak - baseline;
    figures.push(
      `Keyless: 3,000 requests written at once on one connection: ${pipelined.describe()}, RSS ${mib(before)} -> peak ${mib(burstPeak)}`,
      `Keyless: ${nonReaders} connections writing requests and never reading ` +
        `(KEYCELL_KEYSERVER_MAX_PENDING=${MAX_PENDING}): ${Math.min(...written)}-${Math.max(...written)} requests each written before the server stopped reading`,
      `Keyless: RSS ${mib(baseline)} -> peak ${mib(peak)} (+${mib(growth)}); the well-behaved client meanwhile ${wellBehaved.describe()}, ${latencies(wellBehaved.good)}`,
    );
    // Each answered, signed or refused (INTERNAL, when it would wait past the queue's deadline).
    if (pipelined.total !== 3_000 || Object.keys(pipelined.counts).some((k) => k !== "ok" && k !== "internal")) {
      problems.push(`Keyless: the 3,000 pipelined requests got ${pipelined.describe()}`);
    }
    if (wellBehaved.failures > 0) problems.push(`Keyless: the well-behaved client failed ${wellBehaved.describe()}`);
    if (growth > 512 * 1024) problems.push(`Keyless: RSS grew ${mib(growth)}`);
  } finally {
    for (const c of conns) c.close();
    wellBehavedClient.close();
    assertEquals(await ks.keyserver.stop(), 0);
  }
  await recordRow({ row: "memory", verdict: problems.length === 0 ? "pass" : "fail", figures, note: [...problems, ...notes].join("; ") || undefined });
  assert(problems.length === 0, `${problems.join("\n")}\n${figures.join("\n")}`);
}
