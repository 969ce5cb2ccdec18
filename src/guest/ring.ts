/**
 * A one-way queue of byte messages in a `SharedArrayBuffer`, between exactly one writer thread and
 * one reader thread: how requests reach a signer worker and answers come back.
 *
 * A `postMessage` costs tens of microseconds of CPU on both sides (serialising, a channel, waking
 * the other event loop); a signature costs a few hundred. Writing into shared memory and waking
 * the reader only when it sleeps costs a few. The ring carries protocol messages only (requests,
 * sealed blobs, signatures, public keys), never key bytes: those stay in the guest's memory.
 *
 * Layout: 16 bytes of counters (`Int32`: bytes written, bytes read, closed, unused), then
 * `capacity` bytes of records. A record is an 8-byte header (payload length, tag) and the
 * payload, padded to 8 bytes; a record may wrap around the end of the buffer. Counters run
 * modulo 2^32, so only their differences matter.
 *
 * @module
 */

const WRITTEN = 0;
const READ = 1;
const HEADER_BYTES = 8;
const CLOSED = 2;
const COUNTER_BYTES = 16;

/** One message taken from a ring. */
export interface RingMessage {
  /** The writer's number for the message (a request id). */
  tag: number;
  /** A copy of the payload; the ring's memory is reused at once. */
  bytes: Uint8Array;
}

/**
 * Either end of a ring. Both ends are made from the same `SharedArrayBuffer`, one on each thread;
 * only one thread may write and only one may read.
 *
 * @example
 * ```ts
 * import { ByteRing } from "./ring.ts";
 *
 * const buffer = ByteRing.allocate(1 << 20);
 * const writer = new ByteRing(buffer); // this thread
 * // Normally `worker.postMessage(buffer)`, and the worker makes its own `new ByteRing(buffer)`.
 * const reader = new ByteRing(buffer);
 * writer.write(1, new Uint8Array([1, 2, 3])); // true: there was room
 * reader.read(); // { tag: 1, bytes: Uint8Array [1, 2, 3] }
 * reader.read(); // undefined: nothing more to read
 * ```
 */
export class ByteRing {
  readonly #counters: Int32Array;
  readonly #data: Uint8Array;
  readonly #view: DataView;
  readonly #capacity: number;

  /** A buffer for a ring of `capacity` bytes (a power of two, at least 64). */
  static allocate(capacity: number): SharedArrayBuffer {
    if (!Number.isInteger(Math.log2(capacity)) || capacity < 64) {
      throw new RangeError("a ring's capacity must be a power of two, at least 64");
    }
    return new SharedArrayBuffer(COUNTER_BYTES + capacity);
  }

  constructor(buffer: SharedArrayBuffer) {
    this.#counters = new Int32Array(buffer, 0, COUNTER_BYTES / 4);
    this.#data = new Uint8Array(buffer, COUNTER_BYTES);
    this.#view = new DataView(buffer, COUNTER_BYTES);
    this.#capacity = this.#data.length;
  }

  /** The largest payload the ring can ever carry. */
  get maxPayload(): number {
    return this.#capacity - HEADER_BYTES;
  }

  /**
   * Appends a message, copying `bytes`; the reader sees it at once and is woken if it sleeps.
   * Returns false, writing nothing, when the ring lacks room (the reader is behind): the caller
   * keeps the message and writes it later, or waits with {@linkcode waitForRoom}.
   */
  write(tag: number, bytes: Uint8Array): boolean {
    if (bytes.length > this.maxPayload) throw new RangeError(`a ring message may hold at most ${this.maxPayload} bytes`);
    const size = HEADER_BYTES + align8(bytes.length);
    const written = Atomics.load(this.#counters, WRITTEN);
    const used = (written - Atomics.load(this.#counters, READ)) >>> 0;
    if (this.#capacity - used < size) return false;
    const at = written & (this.#capacity - 1);
    // Headers never straddle the end: records are 8-byte aligned and the capacity is too.
    this.#view.setUint32(at, bytes.length, true);
    this.#view.setUint32(at + 4, tag, true);
    this.#copyIn((at + HEADER_BYTES) & (this.#capacity - 1), bytes);
    Atomics.store(this.#counters, WRITTEN, (written + size) | 0);
    // Only a reader that had read everything before this message can be asleep, or about to
    // sleep; one that has not will see this message when it reads on. Loading READ after the
    // store (both sequentially consistent) means a reader that stores READ and then checks
    // WRITTEN either sees the message or is seen here.
    if (Atomics.load(this.#counters, READ) === written) Atomics.notify(this.#counters, WRITTEN);
    return true;
  }

  /** Takes the oldest unread message, or returns undefined when there is none. */
  read(): RingMessage | undefined {
    const read = Atomics.load(this.#counters, READ);
    if (read === Atomics.load(this.#counters, WRITTEN)) return undefined;
    const at = read & (this.#capacity - 1);
    const length = this.#view.getUint32(at, true);
    const tag = this.#view.getUint32(at + 4, true);
    const bytes = this.#copyOut((at + HEADER_BYTES) & (this.#capacity - 1), length);
    Atomics.store(this.#counters, READ, (read + HEADER_BYTES + align8(length)) | 0);
    Atomics.notify(this.#counters, READ);
    return { tag, bytes };
  }

  /**
   * Blocks this thread until a message is unread (returns at once if one is). Returns false,
   * at once or when it happens, once the ring is {@linkcode close}d. Only for threads that may
   * block: a worker, never the host's event loop.
   */
  waitForMessage(): boolean {
    const read = Atomics.load(this.#counters, READ);
    for (;;) {
      if (this.closed) return false;
      const written = Atomics.load(this.#counters, WRITTEN);
      if (written !== read) return true;
      Atomics.wait(this.#counters, WRITTEN, written);
    }
  }

  /**
   * Blocks this thread until `bytes` more payload bytes fit; false once the ring is closed. Only
   * for threads that may block.
   */
  waitForRoom(bytes: number): boolean {
    const size = HEADER_BYTES + align8(bytes);
    for (;;) {
      if (this.closed) return false;
      const read = Atomics.load(this.#counters, READ);
      const used = (Atomics.load(this.#counters, WRITTEN) - read) >>> 0;
      if (this.#capacity - used >= size) return true;
      Atomics.wait(this.#counters, READ, read);
    }
  }

  /**
   * Resolves when a message is unread or the ring is closed, without blocking: for the host's
   * event loop. Resolves at once if one is already there.
   */
  async message(): Promise<void> {
    const read = Atomics.load(this.#counters, READ);
    const written = Atomics.load(this.#counters, WRITTEN);
    if (written !== read || this.closed) return;
    const waiting = Atomics.waitAsync(this.#counters, WRITTEN, written);
    if (waiting.async) await waiting.value;
  }

  /**
   * Closes the ring for both ends and wakes whoever waits on it. A worker blocked on its ring
   * is not stopped by `Worker.terminate()` (it never returns to its event loop); closing the
   * ring lets it return.
   */
  close(): void {
    Atomics.store(this.#counters, CLOSED, 1);
    Atomics.notify(this.#counters, WRITTEN);
    Atomics.notify(this.#counters, READ);
  }

  /** Whether {@linkcode close} was called, on either thread. */
  get closed(): boolean {
    return Atomics.load(this.#counters, CLOSED) !== 0;
  }

  #copyIn(at: number, bytes: Uint8Array): void {
    const first = Math.min(bytes.length, this.#capacity - at);
    this.#data.set(first === bytes.length ? bytes : bytes.subarray(0, first), at);
    if (first < bytes.length) this.#data.set(bytes.subarray(first), 0);
  }

  #copyOut(at: number, length: number): Uint8Array {
    const bytes = new Uint8Array(length);
    const first = Math.min(length, this.#capacity - at);
    bytes.set(this.#data.subarray(at, at + first));
    if (first < length) bytes.set(this.#data.subarray(0, length - first), first);
    return bytes;
  }
}

function align8(n: number): number {
  return (n + 7) & ~7;
}
