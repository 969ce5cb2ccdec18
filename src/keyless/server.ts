/**
 * The Keyless SSL key server: answers Keyless requests with a key service's keys.
 *
 * It signs only through a {@linkcode KeyService} (in production the sealed-key service over the
 * store and the guests), so it holds no key bytes itself; a {@linkcode KeyFinder} names keys by
 * SKI and certificate digest. On its private Unix socket it also answers the key-service RPC
 * (`src/core/key_service_rpc.ts`) for `serve` in `process` mode, in turn with every Keyless
 * client. The parts, one module each: listeners
 * (`listeners.ts`), one connection's framing and backpressure (`connection.ts`), decoding
 * (`operation.ts`), opcode dispatch (`dispatch.ts`), the fair scheduler in front of the guests
 * (`src/core/scheduler.ts`) and audit records (`audit.ts`).
 *
 * @module
 */

import type { KeylessMetrics } from "./metrics.ts";
import { getLog, type Log } from "../core/log.ts";
import type { KeyFileReport } from "../core/protocol.ts";
import type { AuditSink } from "../core/audit.ts";
import { ErrorCode, errorResponse, type Message } from "./codec.ts";
import { type ByteConn, type ConnectionStats, serveConnection } from "./connection.ts";
import { dispatch, type Outcome } from "./dispatch.ts";
import type { KeyFinder } from "./key_finder.ts";
import { type Listening, listenTcp, listenTls, listenUnix, type TlsSettings } from "./listeners.ts";
import { decodeOperation } from "./operation.ts";
import { FairScheduler, type Job, type RunOptions, type SchedulerStats } from "../core/scheduler.ts";
import { AsyncLocalStorage } from "node:async_hooks";
import type { KeyService } from "../core/key_service.ts";
import { keyServiceHandler } from "../core/key_service_rpc.ts";
import { auditRecord, type KeylessAuditRecord } from "./audit.ts";

export type { KeylessAuditRecord } from "./audit.ts";
export type { KeyFinder } from "./key_finder.ts";
export type { TlsSettings } from "./listeners.ts";

/** What the server needs. */
export interface KeylessServerOptions {
  /**
   * Signs for the sign opcodes (a digest, by key id) and answers the key-service RPC on the
   * private socket. Opening a stored key the guests do not hold is its business.
   */
  service: KeyService;
  /** Finds the key a sign request names, such as a key store's index of SKIs and certificate digests. */
  keys: KeyFinder;
  /**
   * Requests pending per connection (read, answer not yet written) before the server stops
   * reading from it. Default 1024.
   */
  maxPendingPerConnection?: number;
  /**
   * How long a frame may take to arrive whole once its first byte has, while the server reads:
   * past that the connection is closed (a client dribbling a partial frame holds nothing open for
   * long). Default 10 s. Idle connections with no partial frame stay open.
   */
  frameTimeoutMs?: number;
  /** Key-service calls in flight at once: one per guest instance. Default 1. */
  concurrency?: number;
  /**
   * A request from a connection with nothing else waiting or running starts at once as an
   * express call when this many others have started since the last one (the scheduler's
   * `expressEvery`); the key service tells it by {@linkcode KeylessServer.inExpressCall}. Default:
   * none.
   */
  expressEvery?: number;
  /**
   * The longest a Keyless request may wait for the key service: one that would wait longer is
   * refused at once with INTERNAL, and one still waiting when it has passed is refused then.
   * Key-service RPC requests (`serve` in `process` mode) are not refused for their wait: `serve`
   * bounds it before it sends them. Default 5 s (the scheduler's `DEFAULT_MAX_WAIT_MS`).
   */
  maxQueueWaitMs?: number;
  /** The key-file report the keycell-private KEY_FILES opcode answers with. */
  keyFiles?: () => readonly KeyFileReport[];
  /** Records every request from a TCP or TLS client. */
  audit?: AuditSink<KeylessAuditRecord>;
  /** Where the listeners say that accepting fails and works again, and the cap is met. Default: keycell's log. */
  log?: Log;
  /** Counts every answered request, and reads the server's connection and queue figures. */
  metrics?: KeylessMetrics;
  /**
   * Connections open at once over every listener (TLS handshakes under way included); past it a
   * new connection is closed at once, so a flood of idle connections meets this cap rather than
   * the process's open-file limit. Default: no cap.
   */
  maxConnections?: number;
}

/** Set while an express call runs, through every await of its job: {@linkcode KeylessServer.inExpressCall}. */
const expressCall = new AsyncLocalStorage<true>();
/** Runs an express call's job marked as one, so the key service can sign it in this isolate. */
const runExpress = <T>(job: Job<T>): Job<T> => (call) => call.express ? expressCall.run(true, () => job(call)) : job(call);

/** Counters for tests and operators. */
export interface KeylessStats extends ConnectionStats, SchedulerStats {
  /** Connections closed at once because {@linkcode KeylessServerOptions.maxConnections} were open. */
  refusedConnections: number;
}

/**
 * A Keyless SSL server over a key service.
 *
 * @example
 * ```ts
 * import { KeylessServer } from "./server.ts";
 * import type { SealedSigner } from "../core/sealed_keys.ts";
 *
 * async function serveKeys(sealedSigner: SealedSigner): Promise<KeylessServer> {
 *   const server = new KeylessServer({ service: sealedSigner, keys: sealedSigner });
 *   await server.listenUnix(".keycell/keyserver.sock");
 *   server.listenTcp({ hostname: "127.0.0.1", port: 2407 });
 *   return server;
 * }
 * ```
 */
export class KeylessServer {
  readonly #options: KeylessServerOptions;
  readonly #rpc: (request: Uint8Array) => Promise<Uint8Array>;
  readonly #scheduler: FairScheduler;
  readonly #log: Log;
  /** Whether the last connection was closed for the cap: says so once, and once when it clears. */
  #atCap = false;
  readonly #listeners = new Set<Listening>();
  readonly #conns = new Set<ByteConn>();
  readonly #served = new Set<Promise<void>>();
  #closed = false;
  /** Aborts every connection's `drain` when the server stops. */
  readonly #draining = new AbortController();
  readonly #stats: ConnectionStats & { refusedConnections: number } = {
    connections: 0,
    requests: 0,
    errors: 0,
    maxPending: 0,
    framingLost: 0,
    gone: 0,
    refusedConnections: 0,
  };

  constructor(options: KeylessServerOptions) {
    this.#options = options;
    this.#rpc = keyServiceHandler(options.service);
    this.#scheduler = new FairScheduler({ concurrency: options.concurrency, maxWaitMs: options.maxQueueWaitMs, expressEvery: options.expressEvery });
    this.#log = options.log ?? getLog("keyserver");
    options.metrics?.watch({
      connections: () => this.#conns.size,
      load: () => this.#scheduler.load,
      refusedConnections: () => this.#stats.refusedConnections,
      refused: () => this.#scheduler.stats.refused,
      dropped: () => this.#scheduler.stats.dropped,
    });
  }

  /** Requests waiting for their turn or being answered, over every connection. */
  get load(): number {
    return this.#scheduler.load;
  }

  /** Whether the code running now is an express call's (its job, and every await within it). */
  static get inExpressCall(): boolean {
    return expressCall.getStore() === true;
  }

  /** What the server has done so far. */
  get stats(): KeylessStats {
    return { ...this.#stats, ...this.#scheduler.stats };
  }

  /**
   * Listens on a private Unix socket (mode 0600), where keycell-private opcodes are allowed. With
   * `takeOver`, a socket a running server listens on is replaced (an upgrade); without it, that
   * is an error.
   */
  async listenUnix(path: string, options: { takeOver?: boolean } = {}): Promise<void> {
    this.#listeners.add(await listenUnix(path, (conn) => this.#serve(conn), this.#log, options));
  }

  /** Listens on plain TCP; returns the bound address (port 0 picks a free port). `reusePort`: SO_REUSEPORT. */
  listenTcp(options: { hostname: string; port: number; reusePort?: boolean }): Deno.NetAddr {
    const listening = listenTcp(options, (conn) => this.#serve(conn), this.#log);
    this.#listeners.add(listening);
    return listening.addr;
  }

  /** Listens on TCP with TLS; with `clientCa`, clients must present a certificate that chains to it. */
  async listenTls(options: { hostname: string; port: number; reusePort?: boolean } & TlsSettings): Promise<{ hostname: string; port: number }> {
    const listening = await listenTls({ ...options, maxConnections: this.#options.maxConnections }, (conn) => this.#serve(conn), this.#log);
    this.#listeners.add(listening);
    return listening.addr;
  }

  /**
   * Stops listening, then gives every connection up to `drainMs` (default 0) to answer the
   * requests it has read and end its stream (`drain` in connection.ts); connections
   * still open then, a client that does not read its answers among them, are closed. Resolves
   * once every connection has finished, with the number that had to be closed.
   */
  async close(drainMs = 0): Promise<{ cut: number }> {
    this.#closed = true;
    const listeners = [...this.#listeners].map((l) => l.close());
    this.#listeners.clear();
    this.#draining.abort();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drained = await Promise.race([
      Promise.allSettled([...listeners, ...this.#served]).then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), drainMs)),
    ]);
    clearTimeout(timer);
    const cut = drained ? 0 : this.#conns.size;
    for (const c of this.#conns) c.close();
    await Promise.allSettled([...listeners, ...this.#served]);
    return { cut };
  }

  #serve(conn: ByteConn): void {
    if (this.#closed) {
      conn.close();
      return;
    }
    const cap = this.#options.maxConnections;
    if (cap !== undefined && this.#conns.size >= cap) {
      conn.close();
      this.#stats.refusedConnections++;
      if (!this.#atCap) this.#log.warn(`${cap} connections are open, the most allowed (KEYCELL_KEYSERVER_MAX_CONNECTIONS); new ones are closed until some end`);
      this.#atCap = true;
      return;
    }
    if (this.#atCap) {
      this.#atCap = false;
      this.#log.info("accepting connections again, below the connection limit");
    }
    this.#stats.connections++;
    this.#conns.add(conn);
    const lane = this.#scheduler.lane();
    const context = { private: conn.private, run: <T>(job: Job<T>, runOptions?: RunOptions) => lane.run(runExpress(job), runOptions), refuses: () => lane.refuses() };
    const options = { ...this.#options, rpc: this.#rpc };
    const answer = async (message: Message): Promise<Uint8Array> => {
      const startedAt = performance.now();
      const op = decodeOperation(message);
      let outcome: Outcome;
      try {
        outcome = await dispatch(op, context, options);
      } catch {
        outcome = { answer: errorResponse(op.id, ErrorCode.INTERNAL), error: ErrorCode.INTERNAL };
      }
      if (outcome.error !== undefined) this.#stats.errors++;
      this.#options.metrics?.answered(op.opcode, outcome.error, (performance.now() - startedAt) / 1000);
      if (this.#options.audit !== undefined && !conn.private) this.#options.audit.record(auditRecord(op, conn, outcome, startedAt));
      return outcome.answer;
    };
    const served = serveConnection(conn, {
      maxPending: this.#options.maxPendingPerConnection ?? 1024,
      share: () => this.#scheduler.share,
      frameTimeoutMs: this.#options.frameTimeoutMs ?? 10_000,
      answer,
      onGone: () => lane.close(),
      drain: this.#draining.signal,
      stats: this.#stats,
    }).finally(() => {
      lane.close();
      this.#conns.delete(conn);
      this.#served.delete(served);
      conn.close();
    });
    this.#served.add(served);
  }
}
