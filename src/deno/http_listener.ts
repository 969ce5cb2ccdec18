/**
 * keycell's HTTP listener: Deno's HTTP server on connections keycell accepts itself, so that it can
 * cap how many are open and close those that take too long to send a request's headers or sit idle.
 *
 * `Deno.serve` accepts its connections out of sight and offers neither a cap nor those timeouts
 * (Deno 2.9). Here a `Deno.listen` listener accepts, and each connection is handed to the same
 * HTTP server `Deno.serve` runs on each of its connections (`serveHttpOnConnection`, which Deno
 * exports to its own modules through `Deno[Deno.internal]`), with an abort signal that closes it.
 * A request reaches the handler once its headers are whole, and its answer is known to be sent
 * (`info.completed`), so a connection is known to be waiting for headers from its accept or its
 * last answer until its next request arrives. The cost per request is `Deno.serve`'s own.
 *
 * When `accept` fails (EMFILE under a connection flood), the listener is closed and opened again
 * after a pause that grows while it keeps failing: new connections are refused only while
 * descriptors are exhausted, the connections already open keep being answered, and the server
 * recovers by itself once descriptors are back.
 *
 * @module
 */

import { getLog, type Log } from "../core/log.ts";

/** What {@linkcode serveResiliently} takes. */
export interface ResilientServeOptions {
  hostname: string;
  /** 0 picks a free port; listening again reuses the one picked. */
  port: number;
  /** SO_REUSEPORT: another process may listen on the same address (for upgrades; needs --unstable-net). */
  reusePort?: boolean;
  /** Called once, when the server first listens. */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Told of each accept failure and of each recovery (one line each, for the operator); keycell's log by default. */
  log?: Log;
  /** First pause before listening again; it doubles up to {@linkcode MAX_RETRY_MS}. Default 50 ms. */
  retryMs?: number;
  /** Connections open at once; more are closed as soon as they are accepted. Default {@linkcode DEFAULT_MAX_CONNECTIONS}. */
  maxConnections?: number;
  /** How long a new connection has to send a request's headers whole. Default {@linkcode DEFAULT_HEADER_TIMEOUT_MS}. */
  headerTimeoutMs?: number;
  /** How long a kept-alive connection has, after an answer, to send its next request's headers whole. Default {@linkcode DEFAULT_IDLE_TIMEOUT_MS}. */
  idleTimeoutMs?: number;
}

/** A server that listens again after its listener fails. */
export interface ResilientServer {
  /**
   * Stops accepting, closes connections waiting for a request, and resolves once every request in
   * flight, requests a kept-alive connection had already sent included, is answered.
   */
  shutdown(): Promise<void>;
  /** Resolves after {@linkcode ResilientServer.shutdown}; never rejects for an accept failure. */
  readonly finished: Promise<void>;
  /** Connections open now. */
  readonly connections: number;
}

/** The longest pause between attempts to listen again. */
export const MAX_RETRY_MS = 2000;
/** Default cap on connections open at once (KEYCELL_MAX_CONNECTIONS). */
export const DEFAULT_MAX_CONNECTIONS = 4096;
/** Default time a new connection has to send a request's headers (KEYCELL_HEADER_TIMEOUT_MS). */
export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
/** Default time a kept-alive connection may wait for its next request (KEYCELL_IDLE_TIMEOUT_MS). */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** Deno's HTTP server on one accepted connection: `Deno.serve`'s, connection by connection. */
type ServeOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal,
  handler: Deno.ServeHandler<Deno.NetAddr>,
  onError: (error: unknown) => Response | Promise<Response>,
  onListen: (scheme: string) => void,
) => Deno.HttpServer<Deno.NetAddr>;

const denoInternals = Deno as unknown as { internal: symbol } & Record<symbol, { serveHttpOnConnection?: ServeOnConnection } | undefined>;
const serveHttpOnConnection = denoInternals[denoInternals.internal]?.serveHttpOnConnection;

/** One accepted connection, and when it is closed unless a request arrives first. */
interface Served {
  server: Deno.HttpServer<Deno.NetAddr>;
  abort: AbortController;
  /** Requests whose answers are not yet sent. */
  requests: number;
  /** `performance.now()` past which it is closed; none while a request is in flight. */
  closeAt: number | undefined;
  /** An answer said `Connection: close`: the connection is closed {@linkcode LINGER_MS} after its last answer. */
  last: boolean;
}

/**
 * How long a connection is kept open after an answer that said `Connection: close` (one sent
 * before the request's body was read whole, or while the server stops), and how long one with
 * nothing in flight is kept once the server is stopping: time for the client to read that
 * answer before the close can reset it, and for a request sent on a kept-alive connection as the
 * stop began to get its answer.
 */
export const LINGER_MS = 500;

/**
 * Serves `handler` on `hostname:port` as `Deno.serve` does, with a cap on connections and header
 * and idle timeouts, listening again whenever accepting fails. Throws as `Deno.listen` does when
 * the first listen fails (`Deno.errors.AddrInUse`).
 *
 * @example
 * ```ts
 * import { serveResiliently } from "./http_listener.ts";
 *
 * const server = serveResiliently({ hostname: "127.0.0.1", port: 0, maxConnections: 100 }, () => new Response("ok"));
 * await server.shutdown();
 * ```
 */
export function serveResiliently(options: ResilientServeOptions, handler: Deno.ServeHandler<Deno.NetAddr>): ResilientServer {
  if (serveHttpOnConnection === undefined) throw new Error(`this Deno (${Deno.version.deno}) does not serve HTTP on accepted connections`);
  const serveOn = serveHttpOnConnection;
  const log = options.log ?? getLog();
  const firstRetryMs = options.retryMs ?? 50;
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const headerTimeoutMs = options.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const served = new Set<Served>();
  let port = options.port;
  let stopping = false;
  let atCap = false;
  let listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr> | undefined;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);

  const onError = (error: unknown): Response => {
    log.error(`unexpected error answering a request: ${(error as Error)?.stack ?? error}`);
    return new Response("Internal Server Error", { status: 500 });
  };

  const serve = (conn: Deno.TcpConn): void => {
    if (served.size >= maxConnections) {
      conn.close();
      if (!atCap) log.warn(`${maxConnections} connections are open, the most allowed (KEYCELL_MAX_CONNECTIONS); new ones are closed until some end`);
      atCap = true;
      return;
    }
    if (atCap) {
      atCap = false;
      log.info("accepting connections again, below the connection limit");
    }
    const abort = new AbortController();
    // Accepted as the server began to stop: its request, sent by now, is still answered.
    const entry: Served = { server: undefined!, abort, requests: 0, closeAt: performance.now() + (stopping ? LINGER_MS : headerTimeoutMs), last: false };
    const answered = () => {
      if (--entry.requests === 0) entry.closeAt = performance.now() + (stopping || entry.last ? LINGER_MS : idleTimeoutMs);
    };
    entry.server = serveOn(conn, abort.signal, async (request, info) => {
      entry.requests++;
      entry.closeAt = undefined;
      info.completed.then(answered, answered);
      const response = await handler(request, info);
      // Stopping: the client is told to take its next request elsewhere (the new server, in an upgrade).
      if (stopping) closeAfter(response);
      if (response.headers.get("Connection")?.toLowerCase() === "close") entry.last = true;
      return response;
    }, onError, () => {});
    served.add(entry);
    // A connection ends with an error when its client resets it: that concerns that client only.
    entry.server.finished.catch(() => {}).finally(() => served.delete(entry));
  };

  // One sweep closes every connection past its deadline: no timer per request.
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const entry of served) {
      if (entry.closeAt !== undefined && now >= entry.closeAt) {
        entry.closeAt = undefined;
        entry.abort.abort();
      }
    }
  }, Math.max(10, Math.min(LINGER_MS, headerTimeoutMs, idleTimeoutMs) / 4));

  const accept = async (on: Deno.Listener<Deno.TcpConn, Deno.NetAddr>): Promise<void> => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await on.accept();
      } catch (err) {
        if (stopping) return;
        // The listener is closed; the connections it accepted are still served.
        log.warn(`cannot accept connections (${(err as Error).message}); open connections are still served`);
        closeQuietly(on);
        relisten(firstRetryMs);
        return;
      }
      serve(conn);
    }
  };

  const listen = (): Deno.NetAddr => {
    listener = Deno.listen({ transport: "tcp", hostname: options.hostname, port, ...(options.reusePort ? { reusePort: true } : {}) });
    void accept(listener);
    return listener.addr;
  };

  const relisten = (delayMs: number): void => {
    retryTimer = setTimeout(() => {
      if (stopping) return;
      try {
        listen();
        log.info("accepting connections again");
      } catch (err) {
        // Usually the same shortage: no descriptor for a new listening socket yet.
        if (delayMs >= MAX_RETRY_MS) log.warn(`still cannot listen (${(err as Error).message})`);
        relisten(Math.min(delayMs * 2, MAX_RETRY_MS));
      }
    }, delayMs);
  };

  let addr: Deno.NetAddr;
  try {
    addr = listen();
  } catch (err) {
    clearInterval(sweep);
    throw err;
  }
  port = addr.port;
  options.onListen?.(addr);

  return {
    finished,
    get connections() {
      return served.size;
    },
    async shutdown() {
      stopping = true;
      clearTimeout(retryTimer);
      if (listener !== undefined) closeQuietly(listener);
      const graceEnds = performance.now() + LINGER_MS;
      for (const entry of served) {
        if (entry.closeAt !== undefined) entry.closeAt = Math.min(entry.closeAt, graceEnds);
      }
      await Promise.allSettled([...served].map((entry) => entry.server.finished));
      clearInterval(sweep);
      resolveFinished();
    },
  };
}

/** Marks `response` as the last on its connection, unless its headers cannot change. */
function closeAfter(response: Response): void {
  try {
    response.headers.set("Connection", "close");
  } catch {
    // Immutable headers: the connection is closed once idle instead.
  }
}

function closeQuietly(listener: Deno.Listener): void {
  try {
    listener.close();
  } catch {
    // already closed
  }
}
