/**
 * The key server's listeners: a Unix socket (mode 0600, the private one), plain TCP, and TLS
 * with optional client certificates. Each turns what it accepts into a {@linkcode ByteConn}.
 *
 * @module
 */

import { getLog, type Log } from "../core/log.ts";
import tls from "node:tls";
import type { ByteConn } from "./connection.ts";

/** A listener that can be stopped. */
export interface Listening {
  /** Stops accepting; resolves once the accept loop has ended. */
  close(): Promise<void>;
}

/** TLS settings for the TCP listener. PEM text. */
export interface TlsSettings {
  cert: string;
  key: string;
  /** When set, clients must present a certificate that chains to one of these. */
  clientCa?: string;
}

/** Receives every accepted connection. */
export type Accept = (conn: ByteConn) => void;


/** The first pause after accepting fails; it doubles up to {@linkcode MAX_RETRY_MS}. */
const FIRST_RETRY_MS = 25;
const MAX_RETRY_MS = 400;
/** How long a TLS client has to finish its handshake. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Listens on a Unix socket (mode 0600). The socket is made under a temporary name in the same
 * directory and renamed into place, so the path always names a listening socket: a stale socket
 * file is replaced, and with `takeOver` so is a live server's (an upgrade: the old server keeps
 * the connections it has, new ones come here). Without it, a path a live server answers on is an
 * error. On close the path is removed only while it is still this socket, never a successor's.
 * Connections on it are private.
 *
 * @example
 * ```ts
 * import { type Listening, listenUnix } from "./listeners.ts";
 * import { type ConnectionOptions, serveConnection } from "./connection.ts";
 *
 * // The key server's private socket: every connection on it is served with the same options.
 * async function listen(options: ConnectionOptions): Promise<Listening> {
 *   return await listenUnix(".keycell/keyserver.sock", (conn) => void serveConnection(conn, options));
 * }
 * ```
 */
export async function listenUnix(
  path: string,
  accept: Accept,
  log: Log = getLog("keyserver"),
  options: { takeOver?: boolean } = {},
): Promise<Listening> {
  if (!options.takeOver && await answers(path)) {
    throw new Error(`a key server is already listening on ${path} (KEYCELL_REUSE_PORT=1 lets a new one take it over)`);
  }
  const slash = path.lastIndexOf("/");
  const temporary = `${path.slice(0, slash + 1)}.${path.slice(slash + 1)}.${Deno.pid}.new`;
  try {
    Deno.removeSync(temporary);
  } catch {
    // none left over
  }
  // Deno removes the path it bound when the listener closes: the temporary one, gone by then.
  const listener = Deno.listen({ transport: "unix", path: temporary });
  let own: Deno.FileInfo;
  try {
    Deno.chmodSync(temporary, 0o600);
    Deno.renameSync(temporary, path);
    own = Deno.lstatSync(path);
  } catch (err) {
    closeQuietly(listener);
    throw err;
  }
  const loop = acceptLoop(listener, true, accept, log, `unix:${path}`);
  return {
    async close() {
      closeQuietly(listener);
      await loop;
      try {
        const there = Deno.lstatSync(path);
        if (there.ino === own.ino && there.dev === own.dev) Deno.removeSync(path);
      } catch {
        // gone already
      }
    },
  };
}

/** Whether a server accepts connections on the Unix socket `path`. */
async function answers(path: string): Promise<boolean> {
  try {
    (await Deno.connect({ transport: "unix", path })).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Listens on plain TCP; `addr` is the bound address (port 0 picks a free port). With `reusePort`
 * (SO_REUSEPORT) a new server can listen on the address of a running one, for an upgrade.
 *
 * @example
 * ```ts
 * import { listenTcp } from "./listeners.ts";
 *
 * const listening = listenTcp({ hostname: "127.0.0.1", port: 0 }, (conn) => conn.close());
 * listening.addr.port; // the free port the system picked
 * await listening.close();
 * ```
 */
export function listenTcp(
  options: { hostname: string; port: number; reusePort?: boolean },
  accept: Accept,
  log: Log = getLog("keyserver"),
): Listening & { addr: Deno.NetAddr } {
  const { hostname, port, reusePort } = options;
  // SO_REUSEPORT (for upgrades) needs --unstable-net, which the keyserver task grants.
  const listener = Deno.listen({ transport: "tcp", hostname, port, ...(reusePort ? { reusePort: true } : {}) });
  const loop = acceptLoop(listener, false, accept, log, `tcp:${listener.addr.hostname}:${listener.addr.port}`);
  return {
    addr: listener.addr,
    close: () => {
      closeQuietly(listener);
      return loop;
    },
  };
}

/**
 * Listens on TCP with TLS, through node:tls (Deno.listenTls cannot ask for client certificates).
 * With `clientCa`, a client without a certificate that chains to it fails the handshake;
 * `reusePort` as for {@linkcode listenTcp}.
 *
 * @example
 * ```ts
 * import { listenTls, type TlsSettings } from "./listeners.ts";
 * import { type ConnectionOptions, serveConnection } from "./connection.ts";
 *
 * // With `clientCa` in the settings, only clients whose certificate chains to it get through.
 * async function listen(settings: TlsSettings, options: ConnectionOptions): Promise<number> {
 *   const listening = await listenTls({ hostname: "0.0.0.0", port: 2407, ...settings }, (conn) => void serveConnection(conn, options));
 *   return listening.addr.port;
 * }
 * ```
 */
export async function listenTls(
  options: { hostname: string; port: number; maxConnections?: number; reusePort?: boolean } & TlsSettings,
  accept: Accept,
  log: Log = getLog("keyserver"),
): Promise<Listening & { addr: { hostname: string; port: number } }> {
  const server = tls.createServer({
    cert: options.cert,
    key: options.key,
    // A client that connects and never finishes its handshake holds a descriptor for this long only.
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    ...(options.clientCa ? { ca: options.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
  }, (socket) => accept(nodeConn(socket)));
  // Counted from the TCP accept, handshakes under way included. node:tls under Deno stops accepting
  // for good once descriptors run out, and can after a flood even under this cap (README).
  if (options.maxConnections !== undefined) server.maxConnections = options.maxConnections;
  server.on("tlsClientError", () => {}); // a failed handshake concerns that client only
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port: options.port, host: options.hostname, ...(options.reusePort ? { reusePort: true } : {}) }, () => resolve());
  });
  const addr = server.address() as { address: string; port: number };
  const where = `tls:${addr.address}:${addr.port}`;
  // After the listen, an error is a failed accept (no descriptor left): node keeps listening.
  let failing = false;
  server.on("error", (err: Error) => {
    if (!failing) log.warn(`cannot accept connections on ${where} (${err.message}); open connections are still served`);
    failing = true;
  });
  server.on("secureConnection", () => {
    if (!failing) return;
    failing = false;
    log.info(`accepting connections again on ${where}`);
  });
  return {
    addr: { hostname: addr.address, port: addr.port },
    close: () => {
      server.close();
      return Promise.resolve();
    },
  };
}

function closeQuietly(listener: Deno.Listener): void {
  try {
    listener.close();
  } catch {
    // already closed
  }
}

/**
 * Accepts until the listener is closed. When accepting fails (no descriptor left under a flood),
 * the connections already open keep being served and accepting is tried again after a pause, so
 * the listener comes back by itself once descriptors are free.
 */
async function acceptLoop(listener: Deno.Listener, isPrivate: boolean, accept: Accept, log: Log, where: string): Promise<void> {
  let retryMs = 0;
  for (;;) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return; // closed
      if (retryMs === 0) log.warn(`cannot accept connections on ${where} (${(err as Error).message}); open connections are still served`);
      retryMs = Math.min(MAX_RETRY_MS, Math.max(FIRST_RETRY_MS, retryMs * 2));
      await new Promise((resolve) => setTimeout(resolve, retryMs));
      continue;
    }
    if (retryMs !== 0) {
      retryMs = 0;
      log.info(`accepting connections again on ${where}`);
    }
    accept(denoConn(conn, isPrivate));
  }
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
      // An empty write still reaches the socket: it fails on a connection the peer has reset.
      if (bytes.length === 0) await conn.write(bytes);
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    },
    async closeWrite() {
      if (!closed) await conn.closeWrite();
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
    chunks: () => pulledChunks(socket),
    write(bytes) {
      // Done once node has passed the bytes on and its buffer is below its mark: an answer the
      // client does not read stays pending rather than piling up in node's buffer.
      return new Promise<void>((resolve, reject) => {
        let waits = 1;
        const done = () => --waits === 0 && resolve();
        if (!socket.write(bytes, (err) => (err ? reject(err) : done()))) {
          waits++;
          socket.once("drain", done);
        }
      });
    },
    closeWrite() {
      // close_notify and FIN after what is written; the socket still reads until the client ends.
      return new Promise<void>((resolve) => socket.end(resolve));
    },
    close() {
      socket.destroy();
    },
  };
}

/**
 * A socket's data, read only when asked for: the socket is paused after every chunk, so bytes
 * the server is not ready for stay in the kernel and the client's writes stall.
 */
async function* pulledChunks(socket: tls.TLSSocket): AsyncGenerator<Uint8Array> {
  const queue: Uint8Array[] = [];
  let ended = false;
  let failure: Error | undefined;
  let notify: (() => void) | undefined;
  const poke = () => {
    const n = notify;
    notify = undefined;
    n?.();
  };
  socket.pause();
  socket.on("data", (chunk: Uint8Array) => {
    queue.push(chunk);
    socket.pause();
    poke();
  });
  socket.on("end", () => {
    ended = true;
    poke();
  });
  socket.on("error", (err: Error) => {
    failure = err;
    poke();
  });
  socket.on("close", () => {
    failure ??= new Error("closed");
    poke();
  });
  for (;;) {
    if (queue.length > 0) {
      yield queue.shift()!;
      continue;
    }
    if (ended) return;
    if (failure !== undefined) throw failure;
    const more = new Promise<void>((resolve) => (notify = resolve));
    socket.resume();
    await more;
  }
}
