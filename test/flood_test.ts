/**
 * A connection flood that uses up the server's file descriptors: `serve`, and the key server on
 * each of its listeners, refuse new connections while they are gone, keep answering the
 * connections they have, and accept again by themselves.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startKeycell, startServer } from "./_command.ts";
import { KeylessClient } from "../src/keyless/client.ts";
import { Opcode } from "../src/keyless/codec.ts";
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

/** A Keyless PING on `conn`: "pong", or what went wrong. */
async function pingOn(conn: Deno.Conn, timeoutMs = 5_000): Promise<string> {
  const client = new KeylessClient(conn);
  try {
    const response = await client.request({ opcode: Opcode.PING, payload: new Uint8Array([1]) }, timeoutMs);
    return response.kind;
  } catch (err) {
    return (err as Error).message;
  } finally {
    client.close();
  }
}

/**
 * Connects and pings: "pong", or why not, within `ms`. `settled` ends when the attempt itself does
 * (a TLS handshake waits until the server accepts), so a test can wait for it before it ends.
 */
async function pingWithin(connect: () => Promise<Deno.Conn>, ms: number): Promise<{ answer: string; settled: Promise<unknown> }> {
  const settled = connect().then((conn) => pingOn(conn, ms), (err) => (err as Error).message);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<string>((resolve) => timer = setTimeout(() => resolve("no answer in time"), ms));
  const answer = await Promise.race([settled, late]);
  clearTimeout(timer);
  return { answer, settled };
}

/**
 * The key server's Unix and TCP listeners under a flood. With a connection cap below the
 * open-file limit, the flood meets the cap and new connections are closed at once. With a cap
 * above what the limit allows, accepting fails, and comes back by itself. Not the TLS listener:
 * it is node:tls's, which in Deno can stop accepting for good after a flood (README, "Connections").
 */
const KEYSERVER_FLOODS = [
  { transport: "tcp", cap: "100", says: "the most allowed" },
  { transport: "unix", cap: "100", says: "the most allowed" },
  { transport: "tcp", cap: "1000", says: "cannot accept connections" },
  { transport: "unix", cap: "1000", says: "cannot accept connections" },
] as const;

for (const { transport, cap, says } of KEYSERVER_FLOODS) {
  const what = Number(cap) < OPEN_FILES ? "meets the connection cap" : "exhausts descriptors (a cap above the limit)";
  Deno.test(`keyserver: a flood on its ${transport} listener that ${what} refuses new connections, keeps serving open ones, then recovers`, async () => {
    const root = await tempDir("keycell-keyserver-flood-");
    const socket = `${root}/data/keyserver.sock`;
    const keyserver = await startKeycell("keyserver", {
      env: {
        KEYCELL_DATA_DIR: `${root}/data`,
        KEYCELL_SIGNER: "inline",
        KEYCELL_KEYSERVER_LISTEN: transport === "unix" ? "off" : "127.0.0.1:0",
        KEYCELL_KEYSERVER_MAX_CONNECTIONS: cap,
      },
      ready: transport === "unix" ? /ready on unix:/ : /ready on .*tcp:127\.0\.0\.1:(\d+)/,
      openFiles: OPEN_FILES,
    });
    const port = Number(keyserver.ready[1]);
    const connect = async (): Promise<Deno.Conn> => {
      if (transport === "unix") return await Deno.connect({ transport: "unix", path: socket });
      return await Deno.connect({ hostname: "127.0.0.1", port });
    };
    const kept = new KeylessClient(await connect());
    const flood: Deno.Conn[] = [];
    try {
      assertEquals((await kept.request({ opcode: Opcode.PING, payload: new Uint8Array([1]) })).kind, "pong");
      for (let i = 0; i < FLOOD; i++) {
        try {
          flood.push(transport === "unix" ? await Deno.connect({ transport: "unix", path: socket }) : await Deno.connect({ hostname: "127.0.0.1", port }));
        } catch {
          break;
        }
      }
      // The positive control that the flood did fill the server: a new connection is not answered.
      const meanwhile = await pingWithin(connect, 1_000);
      assert(meanwhile.answer !== "pong", "a new connection during the flood was answered: the flood filled nothing");
      assert(keyserver.lines.some((l) => l.includes(says)), `"${says}" not said:\n${keyserver.lines.join("\n")}`);
      const during = await kept.request({ opcode: Opcode.PING, payload: new Uint8Array([2]) });
      assertEquals(during.kind, "pong", "an open connection is still answered");

      for (const conn of flood.splice(0)) conn.close();
      await meanwhile.settled;
      let answer = "";
      for (let i = 0; i < 50 && answer !== "pong"; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const attempt = await pingWithin(connect, 2_000);
        await attempt.settled;
        answer = attempt.answer;
      }
      assertEquals(answer, "pong", `new connections are accepted again:\n${keyserver.lines.join("\n")}`);
      assert(keyserver.lines.some((l) => l.includes("accepting connections again")), keyserver.lines.join("\n"));
    } finally {
      for (const conn of flood) conn.close();
      kept.close();
      assertEquals(await keyserver.stop(), 0, "the key server stops cleanly after the flood");
      await Deno.remove(root, { recursive: true });
    }
  });
}
