/**
 * Load from pipelined connections, cheap enough on the client side that one process can offer
 * several times what a server on the same cores can sign: requests are written as bytes in
 * batches, answers read in bulk and matched by Keyless id, or by order for HTTP/1.1. A request
 * that has waited past the timeout closes its connection, as gokeyless does, and is retried once
 * on a new one.
 *
 * @module
 */

import { decodeResponse, encodeMessage, ERROR_NAMES, FrameReader, Opcode } from "../../src/keyless/codec.ts";
import { sleep, Tally } from "./_measure.ts";

/** How to speak to one server. */
export interface Protocol {
  connect(): Promise<Deno.Conn>;
  /** The bytes of request `id`. */
  request(id: number): Uint8Array;
  /** A parser for one connection: fed bytes, answers each response's id (undefined: the next in order) and kind. */
  parser(): (bytes: Uint8Array) => { id?: number; kind: string }[];
}

/** Keyless ECDSA signatures with `ski`. */
export function keylessProtocol(connect: () => Promise<Deno.Conn>, ski: Uint8Array): Protocol {
  const payload = new Uint8Array(32).fill(3);
  return {
    connect,
    request: (id) => encodeMessage({ id, opcode: Opcode.ECDSA_SIGN_SHA256, payload, ski }),
    parser: () => {
      const reader = new FrameReader();
      return (bytes) => {
        reader.push(bytes);
        const out: { id?: number; kind: string }[] = [];
        for (let f = reader.next(); f !== undefined; f = reader.next()) {
          if (f.kind !== "message") throw new Error("the server sent a malformed frame");
          const r = decodeResponse(f.message);
          out.push({ id: r.id, kind: r.kind === "ok" ? "ok" : r.kind === "error" ? ERROR_NAMES[r.code] ?? `error ${r.code}` : r.kind });
        }
        return out;
      };
    },
  };
}

const decoder = new TextDecoder();

/** HTTP/1.1 signatures with `keyId` and `token` on `serve`, pipelined. */
export function httpProtocol(url: string, token: string, keyId: string): Protocol {
  const { hostname, port } = new URL(url);
  const body = JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(7).toBase64() });
  const bytes = new TextEncoder().encode(
    `POST /v1/keys/${keyId}/sign HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
  );
  return {
    connect: () => Deno.connect({ hostname, port: Number(port) }),
    request: () => bytes,
    parser: () => {
      let pending = new Uint8Array(0);
      return (chunk) => {
        const joined = new Uint8Array(pending.length + chunk.length);
        joined.set(pending);
        joined.set(chunk, pending.length);
        const out: { kind: string }[] = [];
        let at = 0;
        for (;;) {
          const text = decoder.decode(joined.subarray(at, Math.min(joined.length, at + 8192)));
          const end = text.indexOf("\r\n\r\n");
          if (end < 0) break;
          const head = text.slice(0, end);
          const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
          const total = end + 4 + length; // headers are ASCII: characters are bytes
          if (at + total > joined.length) break;
          out.push({ kind: head.slice(9, 12) });
          at += total;
        }
        pending = joined.slice(at);
        return out;
      };
    },
  };
}

interface Outstanding {
  sentAt: number;
  attempt: number;
}

/** One pipelined connection that reconnects after a timeout. */
export class LoadConnection {
  #conn: Deno.Conn | undefined;
  #generation = 0;
  #nextId = 1;
  /** In the order sent (HTTP answers in this order). */
  readonly #outstanding = new Map<number, Outstanding>();
  #closed = false;
  /** Requests retried after a timeout. */
  retries = 0;
  reconnects = 0;
  /** Times the server closed the connection. */
  serverClosed = 0;
  #wake: (() => void) | undefined;

  constructor(
    readonly protocol: Protocol,
    readonly tally: Tally,
    readonly options: { timeoutMs?: number; retry?: boolean; onAnswer?: () => void } = {},
  ) {}

  get isClosed(): boolean {
    return this.#closed;
  }

  get outstanding(): number {
    return this.#outstanding.size;
  }

  async open(): Promise<void> {
    this.#conn = await this.protocol.connect();
    this.#read(this.#conn, ++this.#generation);
  }

  /** Sends `count` new requests (and `retried` ones) in one write. */
  async send(count: number, retried: Outstanding[] = []): Promise<void> {
    if (this.#conn === undefined || this.#closed) return;
    const frames: Uint8Array[] = [];
    const now = performance.now();
    for (const previous of [...retried, ...Array.from({ length: count }, () => undefined)]) {
      const id = this.#nextId++;
      this.#outstanding.set(id, { sentAt: previous?.sentAt ?? now, attempt: (previous?.attempt ?? 0) + 1 });
      frames.push(this.protocol.request(id));
    }
    const bytes = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    frames.reduce((at, f) => (bytes.set(f, at), at + f.length), 0);
    try {
      for (let at = 0; at < bytes.length;) at += await this.#conn.write(bytes.subarray(at));
    } catch {
      // the connection went; the sweep counts its requests
    }
  }

  /** Counts requests older than the timeout, closes the connection and retries them once on a new one. */
  async sweep(): Promise<void> {
    const timeoutMs = this.options.timeoutMs;
    if (timeoutMs === undefined || this.#closed) return;
    const now = performance.now();
    const oldest = this.#outstanding.values().next().value;
    if (oldest === undefined || now - oldest.sentAt < timeoutMs) return;
    const retry: Outstanding[] = [];
    for (const o of this.#outstanding.values()) {
      if (o.attempt < 2 && this.options.retry) retry.push({ sentAt: now, attempt: o.attempt });
      else this.tally.add("timeout", now - o.sentAt);
    }
    this.#outstanding.clear();
    // A new generation first: the old connection's reader, ended by this close, must not take it
    // for the server's and open a second connection (which the server's header timeout would
    // later close, counting what was sent on this one as lost).
    this.#generation++;
    this.#conn?.close();
    this.reconnects++;
    await this.open();
    this.retries += retry.length;
    await this.send(0, retry);
  }

  /** Resolves when an answer arrives (or at once when nothing is outstanding). */
  answered(): Promise<void> {
    if (this.#outstanding.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#wake = resolve));
  }

  close(): void {
    this.#closed = true;
    try {
      this.#conn?.close();
    } catch {
      // closed by the sweep or the server
    }
    this.#wake?.();
  }

  async #read(conn: Deno.Conn, generation: number): Promise<void> {
    const parse = this.protocol.parser();
    const buffer = new Uint8Array(256 * 1024);
    try {
      for (let n = await conn.read(buffer); n !== null && generation === this.#generation; n = await conn.read(buffer)) {
        const now = performance.now();
        for (const { id, kind } of parse(buffer.subarray(0, n))) {
          const key = id ?? this.#outstanding.keys().next().value;
          const o = key === undefined ? undefined : this.#outstanding.get(key);
          if (o === undefined) continue;
          this.#outstanding.delete(key!);
          this.tally.add(kind, now - o.sentAt);
          this.options.onAnswer?.();
        }
        const wake = this.#wake;
        this.#wake = undefined;
        wake?.();
      }
    } catch {
      // reset or closed
    }
    if (generation === this.#generation && !this.#closed) {
      // The server closed it: what was outstanding is lost, and the client connects again.
      for (const o of this.#outstanding.values()) this.tally.add("closed", performance.now() - o.sentAt);
      this.#outstanding.clear();
      this.reconnects++;
      this.serverClosed++;
      await this.open().catch(() => (this.#closed = true));
    }
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** Keeps `window` requests outstanding on each connection until `stop()` (a closed loop). */
export async function pipelineClosed(conns: LoadConnection[], window: number, stop: () => boolean): Promise<void> {
  await Promise.all(conns.map(async (c) => {
    while (!stop() && !c.isClosed) {
      await c.send(window - c.outstanding);
      await Promise.race([c.answered(), sleep(50)]);
      await c.sweep();
    }
  }));
  await drain(conns);
}

/** Waits for the answers still outstanding (a timeout counts them). */
async function drain(conns: LoadConnection[]): Promise<void> {
  while (conns.some((c) => c.outstanding > 0 && !c.isClosed)) {
    await sleep(20);
    await Promise.all(conns.map((c) => c.sweep()));
  }
}

/** Offers `ratePerSecond` requests across the connections until `stop()` (an open loop). */
export async function pipelineOpen(
  conns: LoadConnection[],
  ratePerSecond: number,
  stop: () => boolean,
): Promise<{ offered: number; seconds: number; untilLastAnswer: number }> {
  const started = performance.now();
  let offered = 0;
  let turn = 0;
  while (!stop()) {
    const due = Math.floor(((performance.now() - started) / 1000) * ratePerSecond) - offered;
    if (due > 0) {
      const each = Math.ceil(due / conns.length);
      for (let left = due; left > 0;) {
        const n = Math.min(each, left);
        await conns[turn++ % conns.length].send(n);
        offered += n;
        left -= n;
      }
    }
    await Promise.all(conns.map((c) => c.sweep()));
    await sleep(5);
  }
  const seconds = (performance.now() - started) / 1000;
  await drain(conns);
  return { offered, seconds, untilLastAnswer: (performance.now() - started) / 1000 };
}
