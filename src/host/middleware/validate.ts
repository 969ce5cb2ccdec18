/**
 * zod validation of request bodies and queries, answering keycell's 400 `bad_request` with the
 * first problem found; and the bounded body reader under it.
 *
 * Not `hono/validator`: its JSON target reads a body only when the client labels it
 * `application/json`, and keycell has always read the body whatever its label. Not
 * `hono/body-limit` either: it reads a chunked body as {@linkcode readBody} does, but then builds
 * a new `Request` around it, and copying a served request's abort signal makes Deno.serve print
 * a warning about its legacy abort behaviour.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import type { z } from "zod";
import type { Env } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";

const UTF8 = new TextDecoder();

/**
 * How much of a request body a route reads and for how long: at most `maxBodyBytes` (413
 * `too_large` beyond), arriving whole within `bodyTimeoutMs` (408 `request_timeout` after it), so
 * a client that trickles its body, or stops, holds a request slot and a drain on SIGTERM no longer.
 */
export interface BodyLimits {
  maxBodyBytes: number;
  /** Without it, a body may take as long as it likes. */
  bodyTimeoutMs?: number;
}

/**
 * Reads the body within `limits` (see {@linkcode readBody}) as JSON matching `schema`; the
 * handler reads it as `c.req.valid("json")`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { GenerateBody } from "../schemas.ts";
 * const keys = new Hono<Env>().post("/", jsonBody(GenerateBody, { maxBodyBytes: 64 * 1024, bodyTimeoutMs: 10_000 }), (c) => c.json(c.req.valid("json")));
 * ```
 */
export function jsonBody<S extends z.ZodType>(
  schema: S,
  limits: BodyLimits,
): MiddlewareHandler<Env, string, { in: { json: z.input<S> }; out: { json: z.output<S> } }> {
  const { maxBodyBytes, bodyTimeoutMs } = limits;
  return async function jsonBody(c, next) {
    const text = await readBody(c.req.raw, maxBodyBytes, bodyTimeoutMs);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new KeycellError("bad_request", "the body must be JSON");
    }
    c.req.addValidatedData("json", parse(schema, json) as object);
    await next();
  };
}

/**
 * Checks the query string against `schema`; the handler reads it as `c.req.valid("query")`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { PageQuery } from "../schemas.ts";
 * const keys = new Hono<Env>().get("/", query(PageQuery), (c) => c.json(c.req.valid("query")));
 * ```
 */
export function query<S extends z.ZodType>(
  schema: S,
): MiddlewareHandler<Env, string, { in: { query: z.input<S> }; out: { query: z.output<S> } }> {
  return async function query(c, next) {
    c.req.addValidatedData("query", parse(schema, c.req.query()) as object);
    await next();
  };
}

/** A declared length keycell accepts: digits only (`parseInt` would take `12abc` as 12). */
const CONTENT_LENGTH = /^\d{1,15}$/;

/**
 * Reads a request's body as text, at most `maxBytes` of it: 413 `too_large` beyond, at once when
 * its Content-Length says so; 400 `bad_request` when that is not a number or the body ends early
 * (the client closed or cut the connection); 408 `request_timeout` when it has not arrived whole
 * within `timeoutMs`. A body of declared length is read whole, as HTTP
 * framing ends it there (Deno reads a served body into one buffer of its size); any other goes
 * through {@linkcode readChunks}.
 *
 * @example
 * ```ts
 * const text = await readBody(new Request("http://keycell.test/", { method: "POST", body: "{}" }), 64 * 1024);
 * ```
 */
export function readBody(request: Request, maxBytes: number, timeoutMs?: number): Promise<string> {
  const declared = request.headers.get("Content-Length");
  let reading: Promise<string>;
  if (declared !== null) {
    if (!CONTENT_LENGTH.test(declared)) return Promise.reject(new KeycellError("bad_request", "Content-Length must be a number"));
    if (Number(declared) > maxBytes) return Promise.reject(tooLarge(maxBytes));
    // text() before anything reads `request.body`: once the stream exists, Deno reads through it
    // instead of its faster path.
    reading = request.text();
  } else {
    if (request.body === null) return Promise.resolve("");
    reading = readChunks(request.body, maxBytes).then((bytes) => UTF8.decode(bytes));
  }
  // One promise of its own per body, not an async function's as well: this runs for every
  // request that has a body.
  return new Promise<string>((resolve, reject) => {
    const wait = timeoutMs === undefined ? undefined : awaitBody(timeoutMs, reject);
    // A body still arriving when its time is up is left to end or fail on its own, unheard.
    reading.then((text) => {
      if (wait !== undefined) waiting.delete(wait);
      resolve(text);
    }, (err) => {
      if (wait !== undefined) waiting.delete(wait);
      reject(err instanceof KeycellError ? err : cutShort());
    });
  });
}

/** A body still arriving, and how to fail its read once its time is up. */
interface BodyWait {
  readonly deadline: number;
  late(): void;
}

/**
 * Body reads not yet done. One timer checks all their deadlines, every {@linkcode SWEEP_MS} while
 * any is waiting: a timer of each request's own costs more than reading a small body.
 */
const waiting = new Set<BodyWait>();
let sweep: ReturnType<typeof setInterval> | undefined;

/** How late past its deadline a body's read may fail. */
const SWEEP_MS = 50;

/** Has the sweep call `fail` once `timeoutMs` have passed, until the body's wait is deleted from `waiting`. */
function awaitBody(timeoutMs: number, fail: (err: KeycellError) => void): BodyWait {
  const wait: BodyWait = {
    deadline: performance.now() + timeoutMs,
    late: () => fail(new KeycellError("request_timeout", `the request body did not arrive within ${timeoutMs} ms`)),
  };
  waiting.add(wait);
  // The sweep stops itself once it finds nothing waiting: stopping here would start a timer per request.
  sweep ??= setInterval(sweepLate, SWEEP_MS);
  return wait;
}

function sweepLate(): void {
  const now = performance.now();
  for (const wait of waiting) {
    if (wait.deadline > now) continue;
    waiting.delete(wait);
    wait.late();
  }
  if (waiting.size === 0) {
    clearInterval(sweep);
    sweep = undefined;
  }
}

/**
 * Free space each read of a served body is given. Deno's HTTP/1 server decodes a chunk's framing
 * (its size line, extensions included, which it caps at 4 KiB) inside the reader's buffer, and a
 * read whose buffer cannot hold it never settles; so every read gets room for the largest.
 */
const READ_ROOM = 8 * 1024;

/**
 * Reads a body stream into one buffer, 413 `too_large` past `maxBytes`; rejects as the stream
 * does when it ends early. The buffer doubles as bytes arrive, so a body sent a byte at a time
 * holds about twice its bytes at most, and never much more than the limit.
 *
 * A byte stream (a body `Deno.serve` reads off a connection) is read straight into the buffer,
 * which grows to at most `maxBytes` and {@linkcode READ_ROOM} more: read otherwise, each chunk
 * would arrive in a 64 KiB buffer of its own, 64 KiB of allocation per byte of a body sent in
 * 1-byte chunks. Any other stream (a `Request` made from a string) is read chunk by chunk, each
 * chunk copied into a buffer that never grows past `maxBytes`.
 *
 * @example
 * ```ts
 * const bytes = await readChunks(new Blob(["{}"]).stream(), 64 * 1024);
 * ```
 */
export async function readChunks(body: ReadableStream<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const reader = byobReader(body);
  return reader === undefined ? await readCopies(body.getReader(), maxBytes) : await readInto(reader, maxBytes);
}

/** A BYOB reader of `body`, or undefined when it is not a byte stream. */
function byobReader(body: ReadableStream<Uint8Array>): ReadableStreamBYOBReader | undefined {
  try {
    return body.getReader({ mode: "byob" });
  } catch {
    return undefined;
  }
}

/**
 * Reads of served bodies, all of them together, in one turn of the event loop. A read of bytes
 * already received settles at once, so without a pause a body sent in 1-byte chunks is read a
 * chunk per promise for as long as its bytes last, and no other request, timer or signer answer
 * is seen meanwhile. Past this many reads, each body waits for the turn to end.
 */
const READS_PER_TURN = 16;
let readsThisTurn = 0;
let turnEnds: Promise<void> | undefined;

/** Resolves once a body may read again: at once while this turn's reads last. */
async function readAllowed(): Promise<void> {
  for (;;) {
    // A timer can only fire once the event loop has turned (taking in the I/O ready by then): it
    // starts the count afresh. Every body waiting shares it.
    turnEnds ??= new Promise((resolve) =>
      setTimeout(() => {
        turnEnds = undefined;
        readsThisTurn = 0;
        resolve();
      }, 0)
    );
    if (readsThisTurn < READS_PER_TURN) {
      readsThisTurn++;
      return;
    }
    await turnEnds;
  }
}

async function readInto(reader: ReadableStreamBYOBReader, maxBytes: number): Promise<Uint8Array> {
  let buffer = new Uint8Array(READ_ROOM);
  let size = 0;
  try {
    for (;;) {
      if (buffer.length - size < READ_ROOM) {
        const grown = new Uint8Array(Math.min(maxBytes + READ_ROOM, Math.max(size + READ_ROOM, buffer.length * 2)));
        grown.set(buffer.subarray(0, size));
        buffer = grown;
      }
      await readAllowed();
      const read = await reader.read(buffer.subarray(size));
      // The read takes the buffer over (detaches it) and hands it back in its answer.
      if (read.value !== undefined) buffer = new Uint8Array(read.value.buffer);
      if (read.done) break;
      size += read.value.length;
      if (size > maxBytes) throw tooLarge(maxBytes);
    }
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
  return buffer.subarray(0, size);
}

async function readCopies(reader: ReadableStreamDefaultReader<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  let buffer = new Uint8Array(0);
  let size = 0;
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      const end = size + read.value.length;
      if (end > maxBytes) throw tooLarge(maxBytes);
      if (end > buffer.length) {
        const grown = new Uint8Array(Math.min(maxBytes, Math.max(end, buffer.length * 2)));
        grown.set(buffer.subarray(0, size));
        buffer = grown;
      }
      buffer.set(read.value, size);
      size = end;
    }
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
  return buffer.subarray(0, size);
}

function tooLarge(maxBytes: number): KeycellError {
  return new KeycellError("too_large", `request body is over ${maxBytes} bytes`);
}

function cutShort(): KeycellError {
  return new KeycellError("bad_request", "the request body ended before it was complete");
}

/**
 * `value` as `schema` reads it, or 400 `bad_request` naming the first problem and where it is
 * (below `at`, when given).
 *
 * @example
 * ```ts
 * import { SignBody } from "../schemas.ts";
 * const body = parse(SignBody, { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" });
 * parse(SignBody, {}, "batch.3"); // throws bad_request "batch.3.algorithm: ..."
 * ```
 */
export function parse<S extends z.ZodType>(schema: S, value: unknown, at?: string): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const path = [...(at === undefined ? [] : [at]), ...issue.path.map(String)];
  const where = path.length > 0 ? `${path.join(".")}: ` : "";
  throw new KeycellError("bad_request", `${where}${issue.message}`);
}
