/**
 * `Deno.serve` that outlives running out of file descriptors.
 *
 * When `accept` fails (EMFILE under a connection flood), `Deno.serve` closes its listener and
 * rejects `finished`; the connections it already has keep being answered. Left alone, the server
 * would accept nothing more. {@linkcode serveResiliently} listens again on the same address after a
 * pause that grows while it keeps failing, so new connections are refused only while descriptors
 * are exhausted and the server recovers by itself once they are back.
 *
 * @module
 */

import { getLog, type Log } from "../core/log.ts";

/** What {@linkcode serveResiliently} takes. */
export interface ResilientServeOptions {
  hostname: string;
  /** 0 picks a free port; listening again reuses the one picked. */
  port: number;
  /** SO_REUSEPORT: another process may listen on the same address (for upgrades). */
  reusePort?: boolean;
  /** Called once, when the server first listens. */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Told of each accept failure and of each recovery (one line each, for the operator); keycell's log by default. */
  log?: Log;
  /** First pause before listening again; it doubles up to {@linkcode MAX_RETRY_MS}. Default 50 ms. */
  retryMs?: number;
}

/** A server that listens again after its listener fails. */
export interface ResilientServer {
  /** Stops accepting and resolves once every request in flight, on every listener, is answered. */
  shutdown(): Promise<void>;
  /** Resolves after {@linkcode ResilientServer.shutdown}; never rejects for an accept failure. */
  readonly finished: Promise<void>;
}

/** The longest pause between attempts to listen again. */
export const MAX_RETRY_MS = 2000;

/**
 * Serves `handler` on `hostname:port` as `Deno.serve` does, listening again whenever accepting
 * fails. Throws as `Deno.serve` does when the first listen fails (an address in use).
 *
 * @example
 * ```ts
 * import { serveResiliently } from "./http_listener.ts";
 *
 * const server = serveResiliently({ hostname: "127.0.0.1", port: 0 }, () => new Response("ok"));
 * await server.shutdown();
 * ```
 */
export function serveResiliently(options: ResilientServeOptions, handler: Deno.ServeHandler): ResilientServer {
  const log = options.log ?? getLog();
  const firstRetryMs = options.retryMs ?? 50;
  const servers = new Set<Deno.HttpServer>();
  let port = options.port;
  let stopping = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => resolveFinished = resolve);

  const listen = (onListen: (addr: Deno.NetAddr) => void): void => {
    const server = Deno.serve({ hostname: options.hostname, port, reusePort: options.reusePort, onListen }, handler);
    servers.add(server);
    server.finished.then(
      () => servers.delete(server),
      (err) => {
        // The listener is gone; the connections it accepted are still served by `server`.
        if (stopping) return;
        log.warn(`cannot accept connections (${(err as Error).message}); open connections are still served`);
        relisten(firstRetryMs);
      },
    );
  };

  const relisten = (delayMs: number): void => {
    retryTimer = setTimeout(() => {
      if (stopping) return;
      try {
        listen(() => log.info("accepting connections again"));
      } catch (err) {
        // Usually the same shortage: no descriptor for a new listening socket yet.
        if (delayMs >= MAX_RETRY_MS) log.warn(`still cannot listen (${(err as Error).message})`);
        relisten(Math.min(delayMs * 2, MAX_RETRY_MS));
      }
    }, delayMs);
  };

  listen((addr) => {
    port = addr.port;
    options.onListen?.(addr);
  });

  return {
    finished,
    async shutdown() {
      stopping = true;
      clearTimeout(retryTimer);
      await Promise.allSettled([...servers].map((server) => server.shutdown()));
      resolveFinished();
    },
  };
}
