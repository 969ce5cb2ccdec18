/**
 * A connection flood that uses up the server's file descriptors: `serve` refuses new connections
 * while they are gone, keeps answering the connections it has, and accepts again by itself.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startServer } from "./_command.ts";
import { tempDir } from "./_temp.ts";

/** Low enough to run out with a few hundred connections, high enough to start. */
const OPEN_FILES = 256;
const FLOOD = 400;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function statusLineOn(conn: Deno.Conn): Promise<string> {
  await conn.write(encoder.encode("GET /healthz HTTP/1.1\r\nHost: keycell\r\n\r\n"));
  const buffer = new Uint8Array(4096);
  const n = await conn.read(buffer);
  return n === null ? "closed" : decoder.decode(buffer.subarray(0, n)).split("\r\n")[0];
}

Deno.test("serve: a flood that exhausts descriptors refuses new connections, keeps serving open ones, then recovers by itself", async () => {
  const dataDir = await tempDir("keycell-flood-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" }, openFiles: OPEN_FILES });
  const { port } = new URL(server.url);
  const kept = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  const flood: Deno.Conn[] = [];
  try {
    assertEquals(await statusLineOn(kept), "HTTP/1.1 200 OK");
    for (let i = 0; i < FLOOD; i++) {
      try {
        flood.push(await Deno.connect({ hostname: "127.0.0.1", port: Number(port) }));
      } catch {
        break; // the listener is closed while descriptors are out
      }
    }
    // The server saw accept fail (the positive control that the flood did exhaust it).
    for (let i = 0; i < 100 && !server.lines.some((l) => l.includes("cannot accept connections")); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert(server.lines.some((l) => l.includes("cannot accept connections")), `no accept failure seen:\n${server.lines.join("\n")}`);
    assertEquals(await statusLineOn(kept), "HTTP/1.1 200 OK", "an open connection is still answered");

    for (const conn of flood.splice(0)) conn.close();
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = await fetch(`${server.url}/healthz`).then(async (res) => (await res.body?.cancel(), res.status), () => 0);
    }
    assertEquals(status, 200, `new connections are accepted again:\n${server.lines.join("\n")}`);
    assert(server.lines.some((l) => l.includes("accepting connections again")));
  } finally {
    for (const conn of flood) conn.close();
    kept.close();
    assertEquals(await server.stop(), 0, "the server stops cleanly after the flood");
  }
});
