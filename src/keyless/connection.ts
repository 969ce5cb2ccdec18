/**
 * One client connection of the key server: frames in, answers out, many requests in flight.
 *
 * Answers go out in the order they are ready, matched by request id. A request counts as pending
 * from the moment it is read until its answer has been written, and at `maxPending` the server
 * stops reading from the connection, so a client that never reads its answers holds at most
 * that many. A bad request gets its own error answer; only lost framing (a header of another
 * major version, a partial frame at end of stream or past its deadline) closes a connection.
 *
 * @module
 */

import { ErrorCode, errorResponse, FrameReader, type Message } from "./codec.ts";

/** A byte stream to a client, whatever carries it. */
export interface ByteConn {
  /** Chunks as they arrive; each chunk may be reused after the next one is requested. */
  chunks(): AsyncIterable<Uint8Array>;
  /**
   * Resolves once the bytes are written (handed to the kernel), not merely queued. Empty bytes
   * are written too, to learn whether the peer has reset the connection.
   */
  write(bytes: Uint8Array): Promise<void>;
  /**
   * Ends the server's side of the stream after what is written (the client reads the end after
   * the last answer); the connection can still be read, so that what the client sends meanwhile
   * is read and dropped rather than answered by the kernel with a reset that would take the
   * answers still in the client's buffer with it.
   */
  closeWrite(): Promise<void>;
  close(): void;
  /** The Unix socket: keycell-private opcodes are allowed. */
  readonly private: boolean;
  /** The client's address, and its certificate's subject CN, for the audit log. */
  readonly remote?: string;
  readonly client?: string;
}

/** Counters for tests and operators, shared by every connection of a server. */
export interface ConnectionStats {
  connections: number;
  /** Frames read. */
  requests: number;
  errors: number;
  /** The most requests ever pending (read, answer not yet written) on one connection. */
  maxPending: number;
  /** Connections closed because framing was lost. */
  framingLost: number;
  /** Connections lost before they ended: reset by the client, a failed write, or closed by the server. */
  gone: number;
}

/** How a connection is served. */
export interface ConnectionOptions {
  /** Requests pending per connection before the server stops reading from it. */
  maxPending: number;
  /**
   * Requests pending beyond which the server stops reading the connection for now, when fewer
   * than `maxPending`: the connection's share of the key service, which changes with its pace.
   * Counted as pending, from when a request is read, since a request read is on its way to the
   * key service: several chunks' worth can be read before the first of them gets there.
   */
  share?(): number;
  /**
   * How long a frame may take to arrive whole, counted from its first byte and only while the
   * server is reading; past that the connection is closed.
   */
  frameTimeoutMs: number;
  /** Answers one well-framed message; never rejects for the message's sake. */
  answer(message: Message): Promise<Uint8Array>;
  /** Called once when the client is gone (reset, a failed write, or closed by the server). */
  onGone?(): void;
  /**
   * Aborted when the server stops: the connection reads no more, answers every request already
   * read, then ends its side of the stream, so a client knows that a request still unanswered was
   * never read (and may send it to another server). Bounding how long that takes is the caller's.
   * A signal rather than a promise: the server's one promise would keep a reaction, and with it
   * the whole state, of every connection it ever served.
   */
  drain?: AbortSignal;
  stats: ConnectionStats;
}

/**
 * The deadline of a partial frame. It runs only while the server reads: paused while the server
 * has stopped reading because of backpressure, so a busy client is never cut for the server's
 * own wait.
 */
class FrameDeadline {
  readonly #ms: number;
  readonly #expire: () => void;
  #remaining: number | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #armedAt = 0;

  constructor(ms: number, expire: () => void) {
    this.#ms = ms;
    this.#expire = expire;
  }

  /** A new frame has started: the full time again. */
  restart(): void {
    this.stop();
    this.#remaining = this.#ms;
    this.#arm();
  }

  /** A partial frame is buffered: start timing it unless it is timed already. */
  ensure(): void {
    if (this.#remaining === undefined) this.restart();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#remaining = undefined;
  }

  pause(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#remaining! -= performance.now() - this.#armedAt;
  }

  resume(): void {
    if (this.#remaining !== undefined && this.#timer === undefined) this.#arm();
  }

  #arm(): void {
    this.#armedAt = performance.now();
    this.#timer = setTimeout(this.#expire, Math.max(0, this.#remaining!));
  }
}

/**
 * Serves one connection until the client ends it (answering what is pending) or it is lost.
 *
 * @example
 * ```ts
 * import { type ByteConn, type ConnectionStats, serveConnection } from "./connection.ts";
 * import { encodeMessage, Opcode } from "./codec.ts";
 *
 * // A client, held in memory, that sends one ping and ends its stream.
 * const written: Uint8Array[] = [];
 * const conn: ByteConn = {
 *   private: false,
 *   async *chunks() {
 *     yield encodeMessage({ id: 1, opcode: Opcode.PING });
 *   },
 *   write: (bytes) => Promise.resolve(void written.push(bytes)),
 *   closeWrite: () => Promise.resolve(),
 *   close: () => {},
 * };
 * const stats: ConnectionStats = { connections: 0, requests: 0, errors: 0, maxPending: 0, framingLost: 0, gone: 0 };
 * await serveConnection(conn, {
 *   maxPending: 1024,
 *   frameTimeoutMs: 10_000,
 *   answer: (message) => Promise.resolve(encodeMessage({ id: message.id, opcode: Opcode.PONG })),
 *   stats,
 * });
 * stats.requests; // 1, and its pong is in `written`
 * ```
 */
export async function serveConnection(conn: ByteConn, options: ConnectionOptions): Promise<void> {
  const { stats, maxPending } = options;
  const share = options.share ?? (() => Infinity);
  const full = () => pending >= maxPending || pending >= share();
  const reader = new FrameReader();
  let pending = 0;
  let wake: (() => void) | undefined;
  let writes: Promise<void> = Promise.resolve();
  let gone = false;
  let timedOut = false;
  let draining = false;
  const drained = Symbol("drained");
  /** Ends the read under way, if any, with `drained`. */
  let stopRead: ((value: typeof drained) => void) | undefined;
  const onDrain = () => {
    draining = true;
    stopRead?.(drained);
  };
  if (options.drain?.aborted) draining = true;
  else options.drain?.addEventListener("abort", onDrain, { once: true });
  const lost = () => {
    if (gone) return;
    gone = true;
    stats.gone++;
    options.onGone?.();
  };
  const deadline = new FrameDeadline(options.frameTimeoutMs, () => {
    timedOut = true;
    stats.framingLost++;
    lost();
    conn.close();
  });
  const settle = () => {
    pending--;
    const w = wake;
    wake = undefined;
    w?.();
  };
  const room = async () => {
    deadline.pause();
    while (full()) await new Promise<void>((resolve) => (wake = resolve));
    deadline.resume();
  };
  // Answers that are ready while a write is under way go out together in the next one: one
  // system call and one segment for several answers, rather than one each.
  let batch: Uint8Array[] = [];
  const send = (bytes: Uint8Array): Promise<void> => {
    batch.push(bytes);
    if (batch.length > 1) return writes;
    writes = writes.then(() => {
      const out = batch.length === 1 ? batch[0] : concat(batch);
      batch = [];
      return gone ? undefined : conn.write(out);
    }).catch(lost);
    return writes;
  };
  const respond = (answer: Promise<Uint8Array>) => {
    pending++;
    if (pending > stats.maxPending) stats.maxPending = pending;
    answer.then(send).finally(settle);
  };
  const chunks = conn.chunks()[Symbol.asyncIterator]();
  // The read under way: when the server stops while it waits, it is left to the lingering close.
  let next = chunks.next();
  // A promise of its own for each read, not a race with one that lasts the connection's life:
  // that one would keep a reaction for every read until the connection ends.
  const nextRead = () =>
    draining ? Promise.resolve(drained) : new Promise<IteratorResult<Uint8Array> | typeof drained>((resolve, reject) => {
      stopRead = resolve;
      next.then(resolve, reject);
    });
  try {
    read: for (;;) {
      const read = await nextRead();
      stopRead = undefined;
      if (read === drained || read.done) break;
      reader.push(read.value);
      let framed = false;
      for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
        framed = true;
        stats.requests++;
        if (full()) await room();
        if (gone) break read;
        if (frame.kind === "bad-version") {
          stats.errors++;
          stats.framingLost++;
          respond(Promise.resolve(errorResponse(frame.id, ErrorCode.VERSION_MISMATCH)));
          break read;
        }
        if (frame.kind === "malformed") {
          stats.errors++;
          respond(Promise.resolve(errorResponse(frame.id, ErrorCode.FORMAT)));
          continue;
        }
        respond(options.answer(frame.message));
      }
      // Every whole frame of this chunk is answered; a stopping server reads nothing more.
      if (gone || draining) break;
      if (reader.buffered === 0) deadline.stop();
      else if (framed) deadline.restart();
      else deadline.ensure();
      next = chunks.next();
    }
    if (!draining) {
      if (reader.buffered > 0 && !timedOut) stats.framingLost++;
      // End of stream is a half-close or a client that has gone, and TCP tells them apart only on a
      // write: an empty one fails on a reset connection, so its queued requests are dropped.
      if (!gone && pending > 0) await conn.write(new Uint8Array(0)).catch(lost);
    }
  } catch {
    // the peer reset the connection, or the server closed it
    lost();
  } finally {
    deadline.stop();
  }
  try {
    // End of stream may be a half-close: what is pending is still answered.
    while (pending > 0) await new Promise<void>((resolve) => (wake = resolve));
    await writes;
    if (draining && !gone) {
      // The end of the stream follows the last answer; what the client sent after it is read and
      // dropped until it closes too (or the server's drain deadline closes the connection).
      try {
        await conn.closeWrite();
        while (!(await next).done) next = chunks.next();
      } catch {
        // reset or closed by the server
      }
    }
  } finally {
    options.drain?.removeEventListener("abort", onDrain);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
