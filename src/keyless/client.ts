/**
 * A multiplexed Keyless SSL client: many requests in flight on one connection, matched to their
 * responses by request id. Used by the `process` signer transport and by the tests.
 *
 * Timeouts follow the operators' lesson for loopback: a short connect timeout, a longer request
 * timeout, and no retries; a timed-out request fails alone and its late answer is dropped.
 *
 * @module
 */

import { decodeResponse, encodeMessage, FrameReader, type MessageFields, type Response } from "./codec.ts";

/** Where a key server listens. */
export type KeylessAddress = { transport: "unix"; path: string } | { transport: "tcp"; hostname: string; port: number };

/** Why a request did not get an answer. */
export class KeylessClientError extends Error {
  constructor(readonly reason: "timeout" | "closed" | "connect", message: string) {
    super(message);
    this.name = "KeylessClientError";
  }
}

interface Pending {
  resolve(response: Response): void;
  reject(err: Error): void;
  /** When it times out (`performance.now()`), and after how long. */
  deadline: number;
  timeoutMs: number;
}

/**
 * Connects within `timeoutMs` or throws a {@linkcode KeylessClientError} (`connect`).
 *
 * @example
 * ```ts
 * import { connectWithin } from "./client.ts";
 *
 * // Whether a key server accepts connections on its socket.
 * async function isUp(path: string): Promise<boolean> {
 *   try {
 *     (await connectWithin({ transport: "unix", path }, 250)).close();
 *     return true;
 *   } catch {
 *     return false; // no socket, refused, or no connection within 250 ms (a KeylessClientError)
 *   }
 * }
 * ```
 */
export async function connectWithin(address: KeylessAddress, timeoutMs: number): Promise<Deno.Conn> {
  const attempt = address.transport === "unix"
    ? Deno.connect({ transport: "unix", path: address.path })
    : Deno.connect({ transport: "tcp", hostname: address.hostname, port: address.port });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new KeylessClientError("connect", `no connection within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([attempt, timeout]);
  } catch (err) {
    // A connection that arrives after the deadline is closed, not leaked.
    attempt.then((c) => c.close(), () => {});
    if (err instanceof KeylessClientError) throw err;
    throw new KeylessClientError("connect", `cannot connect: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One client connection.
 *
 * @example
 * ```ts
 * import { KeylessClient } from "./client.ts";
 * import { Opcode } from "./codec.ts";
 *
 * // Pings a key server; a pong echoes the ping's payload.
 * async function ping(port: number): Promise<boolean> {
 *   const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port });
 *   try {
 *     const response = await client.request({ opcode: Opcode.PING, payload: new Uint8Array([1]) });
 *     return response.kind === "pong";
 *   } finally {
 *     client.close();
 *   }
 * }
 * ```
 */
export class KeylessClient {
  readonly #conn: Deno.Conn;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #writes: Promise<void> = Promise.resolve();
  #closed = false;
  /**
   * One timer for every waiting request, due at `#timerAt` (at or before the earliest deadline):
   * an answer leaves it be, so requests one after another set no timer each.
   */
  #timer?: ReturnType<typeof setTimeout>;
  #timerAt = Infinity;
  /** Resolves when the connection has closed (either side). */
  readonly closed: Promise<void>;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.closed = this.#readLoop();
  }

  /** Connects with a short timeout (default 250 ms). */
  static async connect(address: KeylessAddress, connectTimeoutMs = 250): Promise<KeylessClient> {
    return new KeylessClient(await connectWithin(address, connectTimeoutMs));
  }

  /** Whether the connection is closed. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Sends a request with a fresh id and waits for its response (default timeout 10 s). */
  request(fields: Omit<MessageFields, "id">, timeoutMs = 10_000): Promise<Response> {
    const id = this.#nextId;
    this.#nextId = (this.#nextId + 1) >>> 0 || 1;
    const answer = this.expect(id, timeoutMs);
    this.write(encodeMessage({ ...fields, id }));
    return answer;
  }

  /** Waits for the response to `id` (which the caller sends itself with {@linkcode write}). */
  expect(id: number, timeoutMs = 10_000): Promise<Response> {
    if (this.#closed) return Promise.reject(new KeylessClientError("closed", "the connection is closed"));
    return new Promise<Response>((resolve, reject) => {
      const deadline = performance.now() + timeoutMs;
      this.#pending.set(id, { resolve, reject, deadline, timeoutMs });
      if (deadline < this.#timerAt) this.#setTimer(deadline);
    });
  }

  #setTimer(at: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, at - performance.now()));
  }

  /** Rejects the requests whose deadline has passed; the timer is set again for the next one. */
  #expire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const [id, pending] of this.#pending) {
      if (pending.deadline <= now) {
        this.#pending.delete(id);
        pending.reject(new KeylessClientError("timeout", `no answer to request ${id} within ${pending.timeoutMs} ms`));
      } else if (pending.deadline < next) {
        next = pending.deadline;
      }
    }
    if (next !== Infinity) this.#setTimer(next);
  }

  /** Writes raw bytes (whole frames, pieces of frames, or garbage). */
  write(bytes: Uint8Array): Promise<void> {
    this.#writes = this.#writes.then(async () => {
      for (let at = 0; at < bytes.length;) at += await this.#conn.write(bytes.subarray(at));
    }).catch(() => this.close());
    return this.#writes;
  }

  /** Ends the client's side of the stream; responses still arrive. */
  async closeWrite(): Promise<void> {
    await this.#writes;
    try {
      await this.#conn.closeWrite();
    } catch {
      // already closed
    }
  }

  /** Closes the connection; requests still waiting reject with `closed`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    this.#failAll();
  }

  async #readLoop(): Promise<void> {
    const reader = new FrameReader();
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        reader.push(buffer.subarray(0, n));
        for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
          if (frame.kind !== "message") throw new Error("the server sent a malformed frame");
          const pending = this.#pending.get(frame.message.id);
          if (pending === undefined) continue; // timed out already
          this.#pending.delete(frame.message.id);
          pending.resolve(decodeResponse(frame.message));
        }
      }
    } catch {
      // reset, closed, or garbage from the server
    }
    this.close();
  }

  #failAll(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    for (const { reject } of this.#pending.values()) {
      reject(new KeylessClientError("closed", "the connection closed before the answer"));
    }
    this.#pending.clear();
  }
}
