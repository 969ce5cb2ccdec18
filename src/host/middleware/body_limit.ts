/**
 * Request bodies: refused past a limit before they are read, and read into one buffer that never
 * holds more than the limit.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { bodyLimit as honoBodyLimit } from "hono/body-limit";
import type { Env } from "../_env.ts";
import { KeycellError } from "../errors.ts";

/** A declared length keycell accepts: digits only (`parseInt` would take `12abc` as 12). */
const CONTENT_LENGTH = /^\d{1,15}$/;

/**
 * Refuses a body over `maxBytes` with 413 `too_large`: at once when its Content-Length says so,
 * else as soon as that many bytes have arrived. A body that ends early (the client closed or cut
 * the connection) is the client's error, 400 `bad_request`.
 *
 * @example
 * ```ts
 * keys.post("/", bodyLimit(64 * 1024), jsonBody(GenerateBody, 64 * 1024), handler);
 * ```
 */
export function bodyLimit(maxBytes: number): MiddlewareHandler<Env> {
  const limit = honoBodyLimit({ maxSize: maxBytes, onError: () => Promise.reject(tooLarge(maxBytes)) });
  return async function bodyLimit(c, next) {
    const declared = c.req.header("Content-Length");
    if (declared !== undefined && !CONTENT_LENGTH.test(declared)) throw new KeycellError("bad_request", "Content-Length must be a number");
    try {
      // Reads a chunked body whole (into one buffer of at most maxBytes) before `next`; what
      // `next` throws is answered inside it, so anything caught here is from the read.
      return await limit(c, next);
    } catch (err) {
      throw err instanceof KeycellError ? err : cutShort();
    }
  };
}

/**
 * Reads a request's body into one buffer of at most `maxBytes` (413 beyond); a body that ends
 * early answers 400. A body of declared length is read whole, as HTTP framing ends it there (Deno
 * reads a served body into one buffer of its size); any other is read chunk by chunk, each copied
 * into one buffer that grows as bytes arrive, so a body sent a byte at a time holds no more
 * memory than its bytes.
 *
 * @example
 * ```ts
 * const bytes = await readBody(c.req.raw, 64 * 1024);
 * ```
 */
export async function readBody(request: Request, maxBytes: number): Promise<Uint8Array> {
  if (request.body === null) return new Uint8Array();
  let bytes: Uint8Array;
  try {
    bytes = request.headers.has("Content-Length") ? new Uint8Array(await request.arrayBuffer()) : await copyChunks(request.body, maxBytes);
  } catch (err) {
    throw err instanceof KeycellError ? err : cutShort();
  }
  if (bytes.length > maxBytes) throw tooLarge(maxBytes);
  return bytes;
}

async function copyChunks(body: ReadableStream<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const reader = body.getReader();
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
