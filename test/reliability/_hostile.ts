/**
 * Hostile clients of `keycell serve` and of the key server, run as a process of their own (as they
 * would be) so that their writing does not share an event loop with the well-behaved client
 * measured beside them:
 *
 * `deno run --allow-net test/reliability/_hostile.ts KIND URL TOKEN KEY_ID COUNT HOLD_MS`
 * `deno run --allow-net test/reliability/_hostile.ts keyless-non-readers HOST:PORT SKI_HEX COUNT`
 *
 * - `chunks`: COUNT connections each send a signing request whose chunked body comes one byte per
 *   chunk (1 KiB of chunks per write) until twice the 64 KiB body limit is sent or the server
 *   answers; each outcome is the answer's status, `closed` or `reset`.
 * - `non-readers`: COUNT connections each write 1,000 pipelined signing requests (100 per write)
 *   and never read an answer, then stay open HOLD_MS; each outcome is `all written`, or `the server
 *   stopped reading` when a write waited over 500 ms.
 * - `keyless-non-readers`: COUNT connections to a key server each write Keyless ECDSA requests, up
 *   to 20 batches of 1,000, and never read an answer; a connection stops writing when a write
 *   waits over 500 ms. Each outcome is how many requests it wrote.
 *
 * It prints the outcomes as one JSON array, and exits once every connection is done.
 *
 * @module
 */

import { encodeMessage, Opcode } from "../../src/keyless/codec.ts";

const encoder = new TextEncoder();
const MAX_BODY = 64 * 1024;
const REQUESTS = 1_000;

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The status of the first answer on `conn`, `closed` or `reset`. */
async function firstStatus(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(4096);
  try {
    const n = await conn.read(buffer);
    return n === null ? "closed" : new TextDecoder().decode(buffer.subarray(0, n)).split("\r\n")[0].slice(9, 12);
  } catch {
    return "reset";
  }
}

async function chunks(connect: () => Promise<Deno.Conn>, head: string): Promise<string> {
  const conn = await connect();
  try {
    await writeAll(conn, encoder.encode(`${head}Transfer-Encoding: chunked\r\n\r\n`));
    const piece = encoder.encode("1\r\nx\r\n".repeat(1024));
    let answer = "";
    const reading = firstStatus(conn).then((status) => answer = status);
    for (let sent = 0; sent < 2 * MAX_BODY && answer === ""; sent += 1024) {
      if (!await writeAll(conn, piece).then(() => true, () => false)) break;
    }
    return await reading;
  } finally {
    conn.close();
  }
}

async function nonReader(connect: () => Promise<Deno.Conn>, head: string, holdMs: number): Promise<string> {
  const conn = await connect();
  try {
    const body = JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(7).toBase64() });
    const request = encoder.encode(`${head}Content-Length: ${body.length}\r\n\r\n${body}`);
    const batch = new Uint8Array(request.length * 100);
    for (let i = 0; i < 100; i++) batch.set(request, i * request.length);
    let written = 0;
    while (written < REQUESTS) {
      const wrote = await Promise.race([writeAll(conn, batch).then(() => true, () => false), sleep(500).then(() => false)]);
      if (!wrote) break;
      written += 100;
    }
    await sleep(holdMs);
    return written === REQUESTS ? "all written" : "the server stopped reading";
  } finally {
    conn.close();
  }
}

/**
 * How many Keyless requests a connection wrote before the key server stopped reading it. The
 * connection is left open, in `opened`.
 */
async function keylessNonReader(connect: () => Promise<Deno.Conn>, ski: Uint8Array, opened: Deno.Conn[]): Promise<number> {
  const payload = new Uint8Array(32).fill(3);
  const frames = Array.from({ length: REQUESTS }, (_, i) => encodeMessage({ id: i + 1, opcode: Opcode.ECDSA_SIGN_SHA256, payload, ski }));
  const batch = new Uint8Array(frames.length * frames[0].length);
  frames.forEach((frame, i) => batch.set(frame, i * frame.length));
  const conn = await connect();
  opened.push(conn);
  let written = 0;
  for (let i = 0; i < 20; i++) {
    const wrote = await Promise.race([writeAll(conn, batch).then(() => true, () => false), sleep(500).then(() => false)]);
    if (!wrote) break;
    written += REQUESTS;
  }
  return written;
}

if (import.meta.main && Deno.args[0] === "keyless-non-readers") {
  const [, address, skiHex, count] = Deno.args;
  const [hostname, port] = address.split(":");
  const connect = () => Deno.connect({ hostname, port: Number(port) });
  const ski = Uint8Array.fromHex(skiHex);
  // Every connection stays open until the last has stopped writing.
  const opened: Deno.Conn[] = [];
  console.log(JSON.stringify(await Promise.all(Array.from({ length: Number(count) }, () => keylessNonReader(connect, ski, opened)))));
  for (const conn of opened) conn.close();
} else if (import.meta.main) {
  const [kind, url, token, keyId, count, holdMs] = Deno.args;
  const { hostname, port } = new URL(url);
  const connect = () => Deno.connect({ hostname, port: Number(port) });
  const head = `POST /v1/keys/${keyId}/sign HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\n`;
  const client = kind === "chunks" ? () => chunks(connect, head) : () => nonReader(connect, head, Number(holdMs));
  console.log(JSON.stringify(await Promise.all(Array.from({ length: Number(count) }, client))));
}
