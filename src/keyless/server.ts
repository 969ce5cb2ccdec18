/**
 * The Keyless SSL key server: answers Keyless requests with the signer compartment's keys.
 *
 * It speaks to the compartment only through its message function (keycell protocol bytes in,
 * bytes out, `src/guest/protocol.ts`), so it holds no key bytes itself; keys are named by SKI and
 * certificate digest through an index built from the public keys the guest returns.
 *
 * Connections: many requests in flight, answered in any order by request id, at most
 * `maxPendingPerConnection` at once (past that the server stops reading from that connection
 * until answers go out). A bad or failing request gets its own error response; only lost framing
 * (a header of another major version, a partial frame at end of stream) closes a connection.
 *
 * @module
 */

import tls from "node:tls";
import type { KeyFileReport } from "../core/protocol.ts";
import type { AuditSink } from "../core/audit.ts";
import {
  ALGORITHM_CODES,
  decodeKeyList,
  decodeKeyRecord,
  decodeResponse as decodeSignerResponse,
  encodeRequest,
  keyIdBytes,
  Op,
  Status,
  statusKeylessError,
  StoreOp,
  toHex,
} from "../core/protocol.ts";
import { ALGORITHM_BY_KEYLESS_OPCODE } from "../core/algorithms.ts";
import {
  encodeMessage,
  ErrorCode,
  errorResponse,
  findItem,
  FrameReader,
  type Message,
  Opcode,
  Tag,
} from "./codec.ts";
import { certificateDigestName, type KeylessNames, keyNames, skiName } from "../core/key_names.ts";


/**
 * One Keyless request from a TCP or TLS client, as the key server's audit log records it. Requests
 * on the private Unix socket are the HTTP host's, which records them itself.
 */
export interface KeylessAuditRecord {
  /** When the answer was ready, ISO 8601 in UTC. */
  time: string;
  /** The client's address. */
  remote?: string;
  /** The subject common name of the client's certificate, when the listener requires one. */
  client?: string;
  /** The opcode's name, such as `ECDSA_SIGN_SHA256` (hex for an opcode keycell does not know). */
  opcode: string;
  /** The SKI the request named, lowercase hex. */
  ski?: string;
  /** The keycell key it resolved to. */
  keyId?: string;
  /** The Keyless error answered, such as `KEY_NOT_FOUND`; absent on success. */
  error?: string;
  /** Milliseconds from the request's arrival to its answer. */
  ms: number;
}

const OPCODE_NAMES = new Map<number, string>(Object.entries(Opcode).map(([name, code]) => [code, name]));
const ERROR_NAMES = new Map<number, string>(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/** The compartment's message function. */
export type SignerFunction = (request: Uint8Array) => Uint8Array | Promise<Uint8Array>;

/** What the server needs. */
export interface KeylessServerOptions {
  signer: SignerFunction;
  /** Requests in flight per connection before the server stops reading from it. Default 1024. */
  maxPendingPerConnection?: number;
  /**
   * How long a frame may take to arrive whole once its first byte has: past that the connection is
   * closed (a client dribbling a partial frame holds nothing open for long). Default 10 s. Idle
   * connections with no partial frame stay open.
   */
  frameTimeoutMs?: number;
  /**
   * The id of the key with an SKI, or else a certificate digest, from a key store's indexes.
   * Default: an index of the signer's own keys (LIST, then PUBLIC_KEY), rebuilt on a miss at most
   * once a second, which suits the keys of a key directory rather than a large store.
   */
  findKey?: (by: Partial<KeylessNames>) => Promise<string | undefined>;
  /** The key-file report the keycell-private KEY_FILES opcode answers with. */
  keyFiles?: () => readonly KeyFileReport[];
  /** Records every request from a TCP or TLS client. */
  audit?: AuditSink<KeylessAuditRecord>;
}

/** A byte stream to a client, whatever carries it. */
interface ByteConn {
  /** Chunks as they arrive; each chunk may be reused after the next one is requested. */
  chunks(): AsyncIterable<Uint8Array>;
  write(bytes: Uint8Array): Promise<void>;
  close(): void;
  /** The Unix socket: keycell-private opcodes are allowed. */
  readonly private: boolean;
  /** The client's address, and its certificate's subject CN, for the audit log. */
  readonly remote?: string;
  readonly client?: string;
}

/** TLS settings for the TCP listener. PEM text. */
export interface TlsSettings {
  cert: string;
  key: string;
  /** When set, clients must present a certificate that chains to one of these. */
  clientCa?: string;
}

/** Counters for tests and operators. */
export interface KeylessStats {
  connections: number;
  requests: number;
  errors: number;
  /** The most requests ever in flight on one connection. */
  maxPending: number;
  /** Connections closed because framing was lost. */
  framingLost: number;
}

const MAX_SNI_BYTES = 253;
const SNI_PATTERN = /^[A-Za-z0-9*_-]+(\.[A-Za-z0-9*_-]+)*\.?$/;
const SLICE_MS = 4;
const INDEX_REFRESH_MS = 1000;

/**
 * A Keyless SSL server over a compartment's message function.
 *
 * @example
 * ```ts
 * const server = new KeylessServer({ signer: (r) => compartment.handle(r) });
 * await server.listenUnix(".keycell/keyserver.sock");
 * server.listenTcp({ hostname: "127.0.0.1", port: 2407 });
 * ```
 */
export class KeylessServer {
  readonly #signer: SignerFunction;
  readonly #maxPending: number;
  readonly #frameTimeoutMs: number;
  readonly #findKey: (by: Partial<KeylessNames>) => Promise<string | undefined>;
  readonly #keyFiles?: () => readonly KeyFileReport[];
  readonly #audit?: AuditSink<KeylessAuditRecord>;
  #index: Promise<Map<string, string>> | undefined;
  #indexBuiltAt = -Infinity;
  readonly #listeners = new Set<{ close(): void }>();
  readonly #conns = new Set<ByteConn>();
  readonly #loops = new Set<Promise<void>>();
  readonly #unixPaths: string[] = [];
  readonly #queue: (() => void)[] = [];
  #draining = false;
  #closed = false;
  readonly stats: KeylessStats = { connections: 0, requests: 0, errors: 0, maxPending: 0, framingLost: 0 };

  constructor(options: KeylessServerOptions) {
    this.#signer = options.signer;
    this.#maxPending = options.maxPendingPerConnection ?? 1024;
    this.#frameTimeoutMs = options.frameTimeoutMs ?? 10_000;
    this.#keyFiles = options.keyFiles;
    this.#findKey = options.findKey ?? ((by) => this.#findInIndex(by.ski ? skiName(by.ski) : certificateDigestName(by.certificateDigest!)));
    this.#audit = options.audit;
  }

  /**
   * Listens on a Unix socket (mode 0600). A stale socket file is replaced; one that a live server
   * answers on is an error.
   */
  async listenUnix(path: string): Promise<void> {
    try {
      const probe = await Deno.connect({ transport: "unix", path });
      probe.close();
      throw new Error(`a key server is already listening on ${path}`);
    } catch (err) {
      if (err instanceof Error && err.message.startsWith("a key server")) throw err;
      try {
        Deno.removeSync(path);
      } catch {
        // no stale socket
      }
    }
    const listener = Deno.listen({ transport: "unix", path });
    Deno.chmodSync(path, 0o600);
    this.#unixPaths.push(path);
    this.#accept(listener, true);
  }

  /** Listens on plain TCP; returns the bound address (port 0 picks a free port). */
  listenTcp(options: { hostname: string; port: number }): Deno.NetAddr {
    const listener = Deno.listen({ transport: "tcp", ...options });
    this.#accept(listener, false);
    return listener.addr;
  }

  /**
   * Listens on TCP with TLS, through node:tls (Deno.listenTls cannot ask for client certificates).
   * With `clientCa`, a client without a certificate that chains to it fails the handshake.
   */
  async listenTls(options: { hostname: string; port: number } & TlsSettings): Promise<{ hostname: string; port: number }> {
    const server = tls.createServer({
      cert: options.cert,
      key: options.key,
      ...(options.clientCa ? { ca: options.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
    }, (socket) => this.#serve(nodeConn(socket)));
    server.on("tlsClientError", () => {}); // a failed handshake concerns that client only
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.hostname, () => resolve());
    });
    this.#listeners.add({ close: () => server.close() });
    const addr = server.address() as { address: string; port: number };
    return { hostname: addr.address, port: addr.port };
  }

  /** Stops listening, closes every connection, and waits for them to finish. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch {
        // already closed
      }
    }
    this.#listeners.clear();
    for (const c of this.#conns) c.close();
    await Promise.allSettled([...this.#loops]);
    for (const path of this.#unixPaths) {
      try {
        Deno.removeSync(path);
      } catch {
        // gone already
      }
    }
  }

  /** Marks the key index stale, e.g. after keys were added or dropped. */
  invalidateIndex(): void {
    this.#index = undefined;
  }

  #accept(listener: Deno.Listener, isPrivate: boolean): void {
    this.#listeners.add(listener);
    const loop = (async () => {
      try {
        for await (const conn of listener) {
          if (this.#closed) {
            conn.close();
            break;
          }
          this.#serve(denoConn(conn, isPrivate));
        }
      } catch {
        // listener closed
      }
    })();
    this.#track(loop);
  }

  #track(loop: Promise<void>): void {
    this.#loops.add(loop);
    loop.finally(() => this.#loops.delete(loop));
  }

  #serve(conn: ByteConn): void {
    if (this.#closed) {
      conn.close();
      return;
    }
    this.stats.connections++;
    this.#conns.add(conn);
    this.#track(this.#connection(conn).finally(() => {
      this.#conns.delete(conn);
      conn.close();
    }));
  }

  async #connection(conn: ByteConn): Promise<void> {
    const reader = new FrameReader();
    let pending = 0;
    let wake: (() => void) | undefined;
    let writes = Promise.resolve();
    let broken = false;
    let partialTimer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    const send = (bytes: Uint8Array) => {
      writes = writes.then(() => broken ? undefined : conn.write(bytes)).catch(() => {
        broken = true;
      });
    };
    const settle = () => {
      pending--;
      const w = wake;
      wake = undefined;
      w?.();
    };
    try {
      read: for await (const chunk of conn.chunks()) {
        reader.push(chunk);
        for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
          this.stats.requests++;
          if (frame.kind === "bad-version") {
            this.stats.errors++;
            this.stats.framingLost++;
            send(errorResponse(frame.id, ErrorCode.VERSION_MISMATCH));
            break read;
          }
          if (frame.kind === "malformed") {
            this.stats.errors++;
            send(errorResponse(frame.id, ErrorCode.FORMAT));
            continue;
          }
          while (pending >= this.#maxPending) await new Promise<void>((resolve) => (wake = resolve));
          pending++;
          if (pending > this.stats.maxPending) this.stats.maxPending = pending;
          const { id } = frame.message;
          this.#audited(frame.message, conn)
            .catch(() => errorResponse(id, ErrorCode.INTERNAL))
            .then(send)
            .finally(settle);
        }
        if (broken) break;
        if (reader.buffered === 0) {
          clearTimeout(partialTimer);
          partialTimer = undefined;
        } else {
          // Timed from a frame's first byte, not reset by more bytes: dribbling does not extend it.
          partialTimer ??= setTimeout(() => {
            timedOut = true;
            this.stats.framingLost++;
            conn.close();
          }, this.#frameTimeoutMs);
        }
      }
      if (reader.buffered > 0 && !timedOut) this.stats.framingLost++;
    } catch {
      // the peer reset the connection, or close() closed it
    } finally {
      clearTimeout(partialTimer);
    }
    while (pending > 0) await new Promise<void>((resolve) => (wake = resolve));
    await writes;
  }

  /** Answers a request, and records it when it came from a TCP or TLS client. */
  async #audited(message: Message, conn: ByteConn): Promise<Uint8Array> {
    if (this.#audit === undefined || conn.private) return await this.#answer(message, conn.private);
    const start = performance.now();
    const fields: Partial<KeylessAuditRecord> = {};
    try {
      return await this.#answer(message, false, fields);
    } catch (err) {
      fields.error = "INTERNAL";
      throw err;
    } finally {
      const opcode = findItem(message.items, Tag.OPCODE);
      const ski = findItem(message.items, Tag.SKI);
      this.#audit.record({
        time: new Date().toISOString(),
        remote: conn.remote,
        client: conn.client,
        opcode: opcode?.length === 1 ? OPCODE_NAMES.get(opcode[0]) ?? `0x${toHex(opcode)}` : "none",
        ski: ski && toHex(ski),
        ...fields,
        ms: Math.round((performance.now() - start) * 1000) / 1000,
      });
    }
  }

  /**
   * Answers one well-framed request; never rejects for the request's sake. Notes the key and any
   * error in `fields`, for the audit log.
   */
  async #answer(message: Message, isPrivate: boolean, fields: Partial<KeylessAuditRecord> = {}): Promise<Uint8Array> {
    const { id, items } = message;
    const fail = (code: ErrorCode) => {
      this.stats.errors++;
      fields.error = ERROR_NAMES.get(code);
      return errorResponse(id, code);
    };
    const opcodeItem = findItem(items, Tag.OPCODE);
    if (opcodeItem === undefined || opcodeItem.length !== 1) return fail(ErrorCode.FORMAT);
    const opcode = opcodeItem[0];
    const payload = findItem(items, Tag.PAYLOAD);

    if (opcode === Opcode.PING) return encodeMessage({ id, opcode: Opcode.PONG, payload: payload ?? new Uint8Array() });
    if (opcode === Opcode.RESPONSE || opcode === Opcode.PONG || opcode === Opcode.ERROR) {
      return fail(ErrorCode.UNEXPECTED_OPCODE);
    }
    if (isPrivate && opcode === Opcode.KEYCELL_MESSAGE) {
      if (payload === undefined || payload.length === 0) return fail(ErrorCode.FORMAT);
      const response = await this.#run(payload);
      const status = response[0];
      if (
        status === Status.GUEST_TRAPPED ||
        (status === Status.OK && (payload[0] === Op.GENERATE || payload[0] === Op.DROP || payload[0] === StoreOp.IMPORT_WRAPPED))
      ) {
        this.invalidateIndex();
      }
      return encodeMessage({ id, opcode: Opcode.RESPONSE, payload: response });
    }
    if (isPrivate && opcode === Opcode.KEYCELL_KEY_FILES) {
      const report = JSON.stringify(this.#keyFiles?.() ?? []);
      return encodeMessage({ id, opcode: Opcode.RESPONSE, payload: new TextEncoder().encode(report) });
    }
    const algorithm = ALGORITHM_BY_KEYLESS_OPCODE.get(opcode);
    if (algorithm === undefined) return fail(ErrorCode.BAD_OPCODE);
    if (payload === undefined || payload.length === 0) return fail(ErrorCode.FORMAT);

    const key = await this.#lookup(items);
    if (typeof key === "number") return fail(key);
    fields.keyId = key;
    const request = encodeRequest(Op.SIGN, keyIdBytes(key)!, Uint8Array.of(ALGORITHM_CODES[algorithm], 0), payload);
    const { status, body } = decodeSignerResponse(await this.#run(request));
    if (status === Status.GUEST_TRAPPED) this.invalidateIndex();
    if (status !== Status.OK) return fail(statusKeylessError(status));
    return encodeMessage({ id, opcode: Opcode.RESPONSE, payload: body });
  }

  /** Finds the keycell key id a request names, or the error code to answer. */
  async #lookup(items: Message["items"]): Promise<string | ErrorCode> {
    const ski = findItem(items, Tag.SKI);
    const digest = findItem(items, Tag.CERTIFICATE_DIGEST);
    if (ski !== undefined && ski.length !== 20) return ErrorCode.FORMAT;
    if (digest !== undefined && digest.length !== 32) return ErrorCode.FORMAT;
    if (ski === undefined && digest === undefined) {
      // keycell selects keys by SKI or digest only. An SNI alone names no key; one that is no
      // host name at all (a URL path, longer than a DNS name) is a format error, never internal.
      const sni = findItem(items, Tag.SNI);
      if (sni !== undefined && !validSni(sni)) return ErrorCode.FORMAT;
      return ErrorCode.KEY_NOT_FOUND;
    }
    try {
      const id = (ski && await this.#findKey({ ski })) || (digest && await this.#findKey({ certificateDigest: digest }));
      return id || ErrorCode.KEY_NOT_FOUND;
    } catch {
      // The store or the index could not answer (the guest failed or was unavailable):
      // transient, so internal, never "key not found".
      return ErrorCode.INTERNAL;
    }
  }

  async #findInIndex(name: string): Promise<string | undefined> {
    const id = (await this.#keyIndex()).get(name);
    // Keys can be added beside this server: a miss rebuilds the index, at most once every
    // INDEX_REFRESH_MS, then looks again.
    if (id !== undefined || performance.now() - this.#indexBuiltAt < INDEX_REFRESH_MS) return id;
    this.invalidateIndex();
    return (await this.#keyIndex()).get(name);
  }

  #keyIndex(): Promise<Map<string, string>> {
    if (this.#index === undefined) {
      this.#indexBuiltAt = performance.now();
      const built = this.#buildIndex();
      this.#index = built;
      built.catch(() => {
        if (this.#index === built) this.#index = undefined;
      });
    }
    return this.#index;
  }

  async #buildIndex(): Promise<Map<string, string>> {
    const index = new Map<string, string>();
    for (const { id, spki } of await this.#signerPublicKeys()) {
      const names = keyNames(spki);
      if (names.length === 0) throw new Error(`key ${id} has an unreadable public key`);
      for (const name of names) index.set(name, id);
    }
    return index;
  }

  /** Every key's public key, as the signer answers LIST and PUBLIC_KEY. */
  async #signerPublicKeys(): Promise<{ id: string; spki: Uint8Array }[]> {
    const listed = decodeSignerResponse(await this.#run(encodeRequest(Op.LIST)));
    const list = listed.status === Status.OK ? decodeKeyList(listed.body) : undefined;
    if (list === undefined) throw new Error(`the signer did not list its keys (status ${listed.status})`);
    const keys: { id: string; spki: Uint8Array }[] = [];
    for (const { id } of list) {
      const res = decodeSignerResponse(await this.#run(encodeRequest(Op.PUBLIC_KEY, keyIdBytes(id)!)));
      if (res.status === Status.KEY_NOT_FOUND) continue; // dropped meanwhile
      const record = res.status === Status.OK ? decodeKeyRecord(res.body) : undefined;
      if (record === undefined) throw new Error(`the signer did not return key ${id} (status ${res.status})`);
      keys.push({ id, spki: record.spki });
    }
    return keys;
  }

  /**
   * Runs one compartment call. Calls go through one FIFO queue that yields to the event loop every
   * few milliseconds, so pings and errors are answered while signatures wait (out of order).
   */
  #run(request: Uint8Array): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve) => {
      this.#queue.push(async () => {
        try {
          resolve(await this.#signer(request));
        } catch {
          resolve(Uint8Array.of(Status.UNAVAILABLE));
        }
      });
      if (!this.#draining) this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      await Promise.resolve();
      let slice = performance.now();
      while (this.#queue.length > 0) {
        const job = this.#queue.shift()!;
        await job();
        if (performance.now() - slice > SLICE_MS) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          slice = performance.now();
        }
      }
    } finally {
      this.#draining = false;
    }
  }
}

function validSni(sni: Uint8Array): boolean {
  if (sni.length === 0 || sni.length > MAX_SNI_BYTES) return false;
  return SNI_PATTERN.test(new TextDecoder().decode(sni));
}

function denoConn(conn: Deno.Conn, isPrivate: boolean): ByteConn {
  let closed = false;
  return {
    private: isPrivate,
    remote: conn.remoteAddr.transport === "tcp" ? conn.remoteAddr.hostname : undefined,
    async *chunks() {
      const buffer = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) return;
        yield buffer.subarray(0, n);
      }
    },
    async write(bytes) {
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
  };
}

function nodeConn(socket: tls.TLSSocket): ByteConn {
  const subject = socket.authorized ? socket.getPeerCertificate()?.subject : undefined;
  return {
    private: false,
    remote: socket.remoteAddress,
    client: typeof subject?.CN === "string" ? subject.CN : undefined,
    async *chunks() {
      for await (const chunk of socket) yield chunk as Uint8Array;
    },
    write(bytes) {
      return new Promise<void>((resolve, reject) => socket.write(bytes, (err) => (err ? reject(err) : resolve())));
    },
    close() {
      socket.destroy();
    },
  };
}
