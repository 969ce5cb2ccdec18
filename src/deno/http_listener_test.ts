import { assert, assertEquals } from "../../test/_assert.ts";
import { type ResilientServeOptions, serveResiliently } from "./http_listener.ts";
import type { Log } from "../core/log.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const GET = encoder.encode("GET / HTTP/1.1\r\nHost: keycell\r\n\r\n");

/** A listener on a free port with `options`, answering "ok" (or as `handler` says), logging into `lines`. */
function listen(options: Partial<ResilientServeOptions>, handler: (request: Request) => Response | Promise<Response> = () => new Response("ok")) {
  const lines: string[] = [];
  const record = (line: string) => void lines.push(line);
  const log: Log = { debug: record, info: record, warn: record, error: record };
  let port = 0;
  const server = serveResiliently({ hostname: "127.0.0.1", port: 0, log, onListen: (addr) => port = addr.port, ...options }, handler);
  const connect = () => Deno.connect({ hostname: "127.0.0.1", port });
  return { server, connect, lines };
}

/** Everything `conn` receives until the server closes it (or resets it): its answers. */
async function untilClosed(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(4096);
  let received = "";
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) received += decoder.decode(buffer.subarray(0, n));
  } catch {
    // reset by the server
  }
  return received;
}

/** The status line of the answer to one GET on `conn`. */
async function statusOn(conn: Deno.Conn): Promise<string> {
  await conn.write(GET);
  const buffer = new Uint8Array(4096);
  const n = await conn.read(buffer);
  return n === null ? "closed" : decoder.decode(buffer.subarray(0, n)).split("\r\n")[0];
}

Deno.test("http listener: a connection past maxConnections is closed at once, the open ones are still answered, and one may connect again once one ends", async () => {
  const { server, connect, lines } = listen({ maxConnections: 2 });
  const first = await connect();
  const second = await connect();
  try {
    assertEquals(await statusOn(first), "HTTP/1.1 200 OK");
    assertEquals(await statusOn(second), "HTTP/1.1 200 OK");
    const third = await connect();
    await third.write(GET).catch(() => {});
    assertEquals(await untilClosed(third), "", "the connection past the cap is closed without an answer");
    third.close();
    assert(lines.some((l) => l.includes("2 connections are open, the most allowed")), lines.join("\n"));
    assertEquals(await statusOn(first), "HTTP/1.1 200 OK", "an open connection is still answered");
    assertEquals(server.connections, 2);

    second.close();
    for (let i = 0; i < 100 && server.connections > 1; i++) await new Promise((r) => setTimeout(r, 10));
    const again = await connect();
    assertEquals(await statusOn(again), "HTTP/1.1 200 OK", "a new connection is served below the cap");
    again.close();
    assert(lines.some((l) => l.includes("accepting connections again, below the connection limit")), lines.join("\n"));
  } finally {
    first.close();
    await server.shutdown();
  }
});

Deno.test("http listener: a kept-alive connection idle past idleTimeoutMs is closed; one in use is not", async () => {
  const { server, connect } = listen({ idleTimeoutMs: 200, headerTimeoutMs: 60_000 });
  const idle = await connect();
  const busy = await connect();
  try {
    assertEquals(await statusOn(idle), "HTTP/1.1 200 OK");
    assertEquals(await statusOn(busy), "HTTP/1.1 200 OK");
    // `busy` asks again more often than the timeout, for longer than it.
    const asking = (async () => {
      const statuses = [];
      for (let i = 0; i < 8; i++) {
        await new Promise((r) => setTimeout(r, 50));
        statuses.push(await statusOn(busy));
      }
      return statuses;
    })();
    assertEquals(await untilClosed(idle), "", "the idle connection is closed");
    assertEquals(new Set(await asking), new Set(["HTTP/1.1 200 OK"]), "the busy connection stays open");
  } finally {
    idle.close();
    busy.close();
    await server.shutdown();
  }
});

Deno.test("http listener: a connection sending its headers slowly is closed after headerTimeoutMs, and so is one that sends nothing", async () => {
  const { server, connect } = listen({ headerTimeoutMs: 200, idleTimeoutMs: 60_000 });
  const slow = await connect();
  const silent = await connect();
  try {
    const head = encoder.encode("GET / HTTP/1.1\r\nHost: keycell\r\nX-Slow: " + "a".repeat(1_000));
    let sent = 0;
    let cut = false;
    const trickling = (async () => {
      // A byte every 20 ms, far longer than the timeout if the server let it.
      for (; sent < head.length; sent++) {
        try {
          await slow.write(head.subarray(sent, sent + 1));
        } catch {
          cut = true;
          return;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    assertEquals(await untilClosed(slow), "", "the slow connection is closed without an answer");
    assertEquals(await untilClosed(silent), "", "the silent connection is closed");
    await trickling;
    assert(cut || sent < head.length, "the headers never got through");
  } finally {
    slow.close();
    silent.close();
    await server.shutdown();
  }
});

Deno.test("http listener: shutdown answers the request in flight and one sent on a kept-alive connection as it began, each with Connection: close, then closes every connection", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  let arrived!: () => void;
  const inFlight = new Promise<void>((resolve) => arrived = resolve);
  const { server, connect } = listen({}, async (request) => {
    if (new URL(request.url).pathname === "/slow") {
      arrived();
      await held;
    }
    return new Response(new URL(request.url).pathname);
  });
  const kept = await connect();
  const busy = await connect();
  const silent = await connect();
  try {
    assertEquals(await statusOn(kept), "HTTP/1.1 200 OK");
    await busy.write(encoder.encode("GET /slow HTTP/1.1\r\nHost: keycell\r\n\r\n"));
    await inFlight;
    const stopped = server.shutdown();
    // The kept-alive connection's client sends its next request just as the stop begins.
    await kept.write(encoder.encode("GET /next HTTP/1.1\r\nHost: keycell\r\n\r\n"));
    const next = await untilClosed(kept);
    assert(next.startsWith("HTTP/1.1 200 OK") && next.endsWith("/next") && /^connection: close$/im.test(next), next);
    release();
    const slow = await untilClosed(busy);
    assert(slow.startsWith("HTTP/1.1 200 OK") && slow.endsWith("/slow"), slow);
    assertEquals(await untilClosed(silent), "", "a connection that sent nothing is closed");
    await stopped;
    assertEquals(server.connections, 0);
  } finally {
    kept.close();
    busy.close();
    silent.close();
  }
});
