import { assert, assertEquals, assertRejects } from "../../../test/_assert.ts";
import { createApp } from "../app.ts";
import { sha256Hex, TokenStore } from "../auth.ts";
import { KeycellError } from "../../core/errors.ts";
import { Metrics } from "../metrics.ts";
import type { SignerClient } from "../../core/signer_client.ts";
import { readBody, readChunks } from "./validate.ts";
import { catchLog } from "../../../test/_log.ts";

const ADMIN = "admin-token-for-body-tests";
/** The size of the buffer each chunk of a real connection's body can sit in. */
const CHUNK_BUFFER_BYTES = 64 * 1024;

/**
 * A body that arrives one byte at a time, each byte a view into a 64 KiB buffer of its own, as
 * from a socket. Each buffer is taken back (detached) once the reader asks for the next byte, so
 * a reader that kept chunks rather than copying them would lose their bytes.
 */
function oneByteChunks(bytes: Uint8Array, end?: Error): ReadableStream<Uint8Array> {
  let at = 0;
  let previous: Uint8Array<ArrayBuffer> | undefined;
  return new ReadableStream({
    pull(controller) {
      previous?.buffer.transfer();
      if (at < bytes.length) {
        previous = new Uint8Array(CHUNK_BUFFER_BYTES).subarray(0, 1);
        previous[0] = bytes[at++];
        controller.enqueue(previous);
      } else if (end !== undefined) {
        controller.error(end);
      } else {
        controller.close();
      }
    },
  }, { highWaterMark: 0 });
}

function post(body: BodyInit, headers: Record<string, string> = {}): Request {
  return new Request("http://keycell.test/", { method: "POST", body, headers });
}

Deno.test("readChunks: a body sent a byte at a time is copied as it arrives into one buffer no larger than the limit", async () => {
  const sent = new TextEncoder().encode(JSON.stringify({ message: "x".repeat(3000) }));
  const maxBytes = 4096;
  const got = await readChunks(oneByteChunks(sent), maxBytes);
  assertEquals(got, sent);
  assert(got.buffer.byteLength <= maxBytes, `held ${got.buffer.byteLength} bytes for a ${sent.length}-byte body`);
});

/**
 * A byte stream (as a served body is) of `bytes` one byte per chunk, each read answered at once,
 * as when the bytes have all been received already; counts the reads in `reads`.
 */
function receivedByteStream(bytes: Uint8Array, reads: { count: number }): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      const view = controller.byobRequest!.view! as Uint8Array;
      if (at === bytes.length) {
        controller.close();
        controller.byobRequest!.respond(0);
        return;
      }
      reads.count++;
      view[0] = bytes[at++];
      controller.byobRequest!.respond(1);
    },
  });
}

Deno.test("readChunks: a byte stream is read into one buffer of at most the limit and the room for one read; past the limit, too_large", async () => {
  const sent = new TextEncoder().encode(JSON.stringify({ message: "x".repeat(10_000) }));
  const got = await readChunks(receivedByteStream(sent, { count: 0 }), 64 * 1024);
  assertEquals(got, sent);
  assert(got.buffer.byteLength <= 64 * 1024 + 8 * 1024, `held ${got.buffer.byteLength} bytes for a ${sent.length}-byte body`);
  await assertRejects(() => readChunks(receivedByteStream(new Uint8Array(4097), { count: 0 }), 4096), KeycellError, "over 4096 bytes");
  assertEquals((await readChunks(receivedByteStream(new Uint8Array(4096), { count: 0 }), 4096)).length, 4096, "exactly the limit is read");
});

Deno.test("readChunks: bodies whose bytes have all arrived let timers and other requests run between their reads", async () => {
  const reads = { count: 0 };
  const bodies = Array.from({ length: 4 }, () => receivedByteStream(new Uint8Array(2_000), reads));
  let readsWhenTimerRan: number | undefined;
  setTimeout(() => readsWhenTimerRan = reads.count, 0);
  await Promise.all(bodies.map((body) => readChunks(body, 64 * 1024)));
  assertEquals(reads.count, 8_000);
  assert(readsWhenTimerRan !== undefined && readsWhenTimerRan < 1_000, `a timer due at once ran after ${readsWhenTimerRan} of 8,000 reads`);
});

Deno.test("readBody: past the limit (declared or counted) is too_large; a malformed length or a body that ends early is bad_request", async () => {
  const code = (err: unknown) => err instanceof KeycellError && err.code;
  await assertRejects(readBody(post(oneByteChunks(new Uint8Array(101))), 100), (err) => code(err) === "too_large");
  await assertRejects(readBody(post("{}", { "Content-Length": "101" }), 100), (err) => code(err) === "too_large");
  await assertRejects(readBody(post("{}", { "Content-Length": "2x" }), 100), (err) => code(err) === "bad_request");
  for (const headers of [{}, { "Content-Length": "50" }] as Record<string, string>[]) {
    await assertRejects(
      readBody(post(oneByteChunks(new Uint8Array(10), new Error("connection reset")), headers), 100),
      (err) => code(err) === "bad_request",
    );
  }
  assertEquals(await readBody(post(oneByteChunks(new TextEncoder().encode('{"a":"é"}'))), 100), '{"a":"é"}');
  assertEquals(await readBody(new Request("http://keycell.test/"), 100), "");
});

Deno.test("readBody: a body that has not arrived whole within its time is request_timeout, declared length or not", async () => {
  const stalled = () => new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new TextEncoder().encode('{"a":')) });
  for (const headers of [{}, { "Content-Length": "50" }] as Record<string, string>[]) {
    const err = await readBody(post(stalled(), headers), 100, 50).catch((e) => e);
    assert(err instanceof KeycellError && err.code === "request_timeout" && err.status === 408, String(err));
  }
  assertEquals(await readBody(post("{}"), 100, 50), "{}", "a whole body is read as before");
});

Deno.test("jsonBody: the app answers 408 request_timeout in its JSON shape for a body that stalls", async () => {
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
  const slow = createApp({ signer: { mode: "stub" } as unknown as SignerClient, tokens, bodyTimeoutMs: 50 });
  const body = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new TextEncoder().encode('{"keySpec":')) });
  const res = await slow.request("/v1/keys", { method: "POST", body, headers: { Authorization: `Bearer ${ADMIN}` }, duplex: "half" } as RequestInit);
  assertEquals([res.status, (await res.json()).error.code], [408, "request_timeout"]);
});

/** An app whose signer makes the same key every time. */
function app(metrics: Metrics) {
  const key = { id: "ab".repeat(32), keySpec: "ECC_NIST_P256", publicKey: new Uint8Array([0x30]) };
  const signer = { mode: "stub", generate: () => Promise.resolve(key) } as unknown as SignerClient;
  const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(ADMIN), keys: "*" }]);
  return createApp({ signer, tokens, metrics, maxBodyBytes: 4096 });
}

/** Runs `work` with console.error and keycell's log recorded; resolves with what they printed. */
async function consoleErrors(work: () => Promise<void>): Promise<string[]> {
  const printed: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    printed.push(...(await catchLog(work)).map((caught) => caught.line));
  } finally {
    console.error = consoleError;
  }
  return printed;
}

Deno.test("a body cut short is the client's 400, not a logged 500, whether chunked or of declared length", async () => {
  const metrics = new Metrics();
  const api = app(metrics);
  const auth = { Authorization: `Bearer ${ADMIN}` };
  const printed = await consoleErrors(async () => {
    for (const headers of [auth, { ...auth, "Content-Length": "200" }]) {
      const body = oneByteChunks(new TextEncoder().encode('{"keySpec":'), new Error("connection reset"));
      const res = await api.request("/v1/keys", { method: "POST", body, headers });
      const json = await res.json();
      assertEquals([res.status, json.error.code], [400, "bad_request"], JSON.stringify(headers));
    }
  });
  assertEquals(printed, [], "nothing logged as unexpected");
  const text = await metrics.render();
  assert(text.includes('keycell_http_requests_total{route="/v1/keys",status="400"} 2'), text);
  assert(!text.includes('status="500"'), text);
});

Deno.test("served: a body the client stops sending (half-closed) answers 400 in keycell's shape, logged as nothing", async () => {
  const metrics = new Metrics();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app(metrics).fetch);
  try {
    const printed = await consoleErrors(async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      try {
        const head = `POST /v1/keys HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${ADMIN}\r\n` +
          `Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"keySpec":`;
        await conn.write(new TextEncoder().encode(head));
        await conn.closeWrite();
        const answer = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
        assert(answer.startsWith("HTTP/1.1 400"), answer);
        const body = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
        assertEquals(body.error.code, "bad_request");
      } finally {
        try {
          conn.close();
        } catch {
          // Already closed by reading its readable to the end.
        }
      }
    });
    assertEquals(printed, [], "nothing logged as unexpected");
    const text = await metrics.render();
    assert(text.includes('status="400"'), text);
  } finally {
    await server.shutdown();
  }
});

/**
 * Sends one request a byte per write over a real connection; resolves with the answer's status
 * line and body, read up to its Content-Length (a server that answered before the body's end may
 * keep the connection open for the rest).
 */
async function sendByteByByte(port: number, head: string, body: Uint8Array): Promise<{ status: string; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    conn.setNoDelay(true);
    await conn.write(new TextEncoder().encode(head));
    for (const byte of body) await conn.write(new Uint8Array([byte]));
    let answer = "";
    const buffer = new Uint8Array(4096);
    for (;;) {
      const end = answer.indexOf("\r\n\r\n");
      const length = /\r\ncontent-length: (\d+)\r\n/i.exec(answer);
      if (end >= 0 && length !== null && answer.length >= end + 4 + Number(length[1])) {
        return { status: answer.slice(0, answer.indexOf("\r\n")), body: answer.slice(end + 4) };
      }
      const n = await conn.read(buffer);
      if (n === null) throw new Error(`the connection closed mid-answer: ${answer}`);
      answer += new TextDecoder().decode(buffer.subarray(0, n));
    }
  } finally {
    conn.close();
  }
}

Deno.test("served: a chunked body whose size lines carry extensions as long as Deno accepts is read whole", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app(new Metrics()).fetch);
  try {
    const json = `{"keySpec":"ECC_NIST_P256"}`;
    // Deno refuses a size line of 4 KiB or more; each read of the body must have room for one.
    const extension = `;note=${"a".repeat(4_000)}`;
    const chunked = [...json].map((c) => `1${extension}\r\n${c}\r\n`).join("") + "0\r\n\r\n";
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    try {
      await conn.write(new TextEncoder().encode(
        `POST /v1/keys HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${ADMIN}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`,
      ));
      const answer = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
      assert(answer.startsWith("HTTP/1.1 201"), answer);
    } finally {
      try {
        conn.close();
      } catch {
        // Already closed by reading its readable to the end.
      }
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("served: bodies sent a byte per write, chunked or of declared length, are read whole; past the limit, 413", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app(new Metrics()).fetch);
  const head = `POST /v1/keys HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${ADMIN}\r\nConnection: close\r\n`;
  const chunked = (text: string) => new TextEncoder().encode([...text].map((c) => `1\r\n${c}\r\n`).join("") + "0\r\n\r\n");
  const json = `{"keySpec":"ECC_NIST_P256"${" ".repeat(500)}}`;
  try {
    const viaLength = await sendByteByByte(server.addr.port, `${head}Content-Length: ${json.length}\r\n\r\n`, new TextEncoder().encode(json));
    assertEquals(viaLength.status, "HTTP/1.1 201 Created", viaLength.body);
    const viaChunks = await sendByteByByte(server.addr.port, `${head}Transfer-Encoding: chunked\r\n\r\n`, chunked(json));
    assertEquals(viaChunks.status, "HTTP/1.1 201 Created", viaChunks.body);
    // Past the 4096-byte limit the answer comes before the body ends; the rest is not read.
    const over = await sendByteByByte(server.addr.port, `${head}Transfer-Encoding: chunked\r\n\r\n`, chunked(" ".repeat(4097)).subarray(0, 4097 * 6));
    assertEquals([over.status, JSON.parse(over.body).error.code], ["HTTP/1.1 413 Payload Too Large", "too_large"]);
  } finally {
    await server.shutdown();
  }
});
