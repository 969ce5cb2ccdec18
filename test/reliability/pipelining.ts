/**
 * One connection pipelining at full speed beside a second client that signs one request at a
 * time: the second client's p99 alone and beside the flood, for the key server over Keyless on
 * TCP and on TLS, and for `serve` over HTTP with a token for each client. The second client must
 * never fail, and the server's resident memory stay bounded.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { KeylessClient } from "../../src/keyless/client.ts";
import { after, closedLoop, latencies, mib, quantile, rssKib, size, Tally } from "./_measure.ts";
import { httpProtocol, keylessProtocol, LoadConnection, pipelineClosed, type Protocol } from "./_pipeline.ts";
import { keylessSign, keyserverWithKey, serveWithKey, signer } from "./_serve.ts";
import { recordRow } from "./_report.ts";

interface Face {
  name: string;
  ratio: number;
  failures: number;
  rssGrowthKib: number;
  figures: string[];
}

/** The second client alone, then beside one connection keeping `window` requests outstanding. */
async function beside(name: string, pid: number, protocol: Protocol, window: number, once: () => Promise<string>): Promise<Face> {
  const ms = size(1_000, 10_000);
  await closedLoop(1, once, after(500));
  const alone = await closedLoop(1, once, after(ms));
  const before = rssKib(pid);
  const floodTally = new Tally();
  const flood = new LoadConnection(protocol, floodTally, { timeoutMs: 60_000 });
  await flood.open();
  let stopFlood = false;
  const flooding = pipelineClosed([flood], window, () => stopFlood);
  // Once the flood runs at full speed.
  while (floodTally.total < window) await new Promise((r) => setTimeout(r, 10));
  let peak = rssKib(pid);
  const sampling = setInterval(() => (peak = Math.max(peak, rssKib(pid))), 200);
  const during = await closedLoop(1, once, after(ms));
  stopFlood = true;
  await flooding;
  clearInterval(sampling);
  flood.close();
  const ratio = quantile(during.good, 0.99) / quantile(alone.good, 0.99);
  return {
    name,
    ratio,
    failures: during.failures,
    rssGrowthKib: peak - before,
    figures: [
      `${name}: second client alone ${latencies(alone.good)}; beside the flood ${latencies(during.good)}: **p99 ${ratio.toFixed(2)}x**, failures ${during.failures}`,
      `${name}: the flood (${window} outstanding on one connection) got ${floodTally.describe()}; RSS ${mib(before)} -> peak ${mib(peak)}`,
    ],
  };
}

/** Runs the scenario and records its row. */
export async function pipelining(): Promise<void> {
  const faces: Face[] = [];
  for (const tls of [false, true]) {
    // The bound an operator sets for clients with a 1 s timeout, as the overload row does: the
    // flood's share of the guests is a quarter of it.
    const ks = await keyserverWithKey({ tls, env: { KEYCELL_KEYSERVER_MAX_QUEUE_WAIT_MS: "250" } });
    const second = new KeylessClient(await ks.connect());
    try {
      faces.push(await beside(`Keyless ${tls ? "TLS" : "TCP"}`, ks.keyserver.pid, keylessProtocol(ks.connect, ks.ski), size(1_000, 3_000), () => keylessSign(second, ks.ski)));
    } finally {
      second.close();
      assertEquals(await ks.keyserver.stop(), 0);
    }
  }
  const http = await serveWithKey({ KEYCELL_SIGNER: "worker" }, { tokens: ["flood", "second"] });
  try {
    const secondSign = signer(http.server.url, http.tokens.second, http.key.id);
    faces.push(await beside("HTTP, a token each", http.server.pid, httpProtocol(http.server.url, http.tokens.flood, http.key.id), 64, () => secondSign()));
  } finally {
    assertEquals(await http.server.stop(), 0);
  }
  const figures = faces.flatMap((f) => f.figures);
  const ok = faces.every((f) => f.failures === 0 && f.ratio <= 3);
  const over = faces.filter((f) => f.ratio > 3).map((f) => f.name);
  await recordRow({ row: "pipelining", verdict: ok ? "pass" : "fail", figures, note: over.length ? `p99 over 3x its unloaded p99: ${over.join(", ")}` : undefined });
  for (const f of faces) {
    assertEquals(f.failures, 0, `${f.name}: the second client never fails`);
    assert(f.rssGrowthKib < 256 * 1024, `${f.name}: RSS bounded (grew ${mib(f.rssGrowthKib)})`);
  }
}
