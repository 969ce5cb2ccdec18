/**
 * `keycell keyserver`: a separate OS process that holds the sealed-key service (the store and a
 * pool of guests) and serves it over the Keyless SSL protocol, on a Unix socket (mode 0600, also
 * carrying the key-service RPC for `serve` in the `process` signer mode) and on TCP (optionally
 * TLS with client certificates). Every request, Keyless or RPC, is one call to the same
 * `SealedSigner` (src/core/sealed_keys.ts), scheduled fairly across connections.
 *
 * @module
 */

import { KeylessMetrics } from "../keyless/metrics.ts";
import { hostPort, serveMetrics } from "./_metrics_listener.ts";
import { superviseKeyservers } from "./keyserver_processes.ts";
import { loadConfig, loadKeyserverConfig, type Settings } from "./config.ts";
import { openAuditLog, startKeyService } from "./start.ts";
import { type KeylessAuditRecord, KeylessServer } from "../keyless/server.ts";
import { getLog } from "../core/log.ts";

const log = getLog("keyserver");

/**
 * Runs the key server until SIGINT or SIGTERM (or stdin closing, when started by a host), then
 * drains (KEYCELL_DRAIN_MS) and exits 0; configured by `settings`: the `KEYCELL_*` environment
 * variables unless the caller layers them over a config file.
 *
 * @example
 * ```ts
 * import { runKeyserver } from "./keyserver.ts";
 *
 * if (Deno.args[0] === "keyserver") await runKeyserver();
 * ```
 */
export async function runKeyserver(settings: Settings = (name) => Deno.env.get(name)): Promise<void> {
  const config = loadConfig(settings);
  const ks = loadKeyserverConfig(settings);
  if (ks.processes > 1) {
    if (config.engine === "wasmtime") {
      throw new Error("KEYCELL_KEYSERVER_PROCESSES runs a guest in each process's own isolate; it does not go with KEYCELL_ENGINE=wasmtime");
    }
    return await superviseKeyservers(ks.processes, ks);
  }
  Deno.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const audit = openAuditLog<KeylessAuditRecord>(ks.auditLog, log);
  // The same sealed keys as `serve`, started the same way: the same master key and store, and a
  // pool of guests in workers, one per core unless KEYCELL_SIGNER_INSTANCES says otherwise. A
  // request that comes alone skips the hop to a worker: it is signed by a guest in this isolate,
  // which has no HTTP front end to protect from (`serve` keeps its guests out of its own isolate),
  // and so is an express call (a client's only request while others queue: `expressEvery`).
  let server: KeylessServer | undefined = undefined;
  const maxConnections = ks.maxConnections;
  const { service: sealed, store, keyFiles, instances, guest } = await startKeyService(config, log, {
    inlineWhen: (workersIdle) => KeylessServer.inExpressCall || workersIdle && server !== undefined && server.load === 1,
  });
  const metrics = ks.metrics === undefined ? undefined : new KeylessMetrics();
  server = new KeylessServer({
    metrics,
    service: sealed,
    // The store's index of SKIs and certificate digests: one query a request, at any number of keys.
    keys: sealed,
    keyFiles: () => keyFiles,
    maxPendingPerConnection: ks.maxPendingPerConnection,
    maxConnections,
    maxQueueWaitMs: ks.maxQueueWaitMs,
    // Two calls per guest: while one signs, the next waits in its ring, so a guest goes from one
    // signature to the next without waiting for this isolate (and without sleeping between them).
    concurrency: instances * 2,
    // A client sending one request at a time is signed by the guest in this isolate at once, not
    // behind a pipelining client's calls queued in the workers; that guest takes at most one
    // request in instances + 1, like one more guest.
    expressEvery: instances,
    audit,
  });
  // KEYCELL_REUSE_PORT=1: an upgrade. The new server takes over the Unix socket's path and shares
  // the TCP address (SO_REUSEPORT) while the old one drains.
  // Of several processes sharing the TCP address, the first serves the Unix socket.
  const where: string[] = [];
  if (ks.processIndex === 0) {
    await server.listenUnix(config.keyserverSocket, { takeOver: config.reusePort });
    where.push(`unix:${config.keyserverSocket}`);
  }
  if (ks.tcp !== undefined) {
    if (ks.tlsCert !== undefined && ks.tlsKey !== undefined) {
      const addr = await server.listenTls({
        ...ks.tcp,
        reusePort: config.reusePort,
        cert: Deno.readTextFileSync(ks.tlsCert),
        key: Deno.readTextFileSync(ks.tlsKey),
        clientCa: ks.clientCa === undefined ? undefined : Deno.readTextFileSync(ks.clientCa),
      });
      where.push(`tls:${hostPort(addr.hostname, addr.port)}${ks.clientCa ? " (client certificates required)" : ""}`);
    } else {
      const addr = server.listenTcp({ ...ks.tcp, reusePort: config.reusePort });
      where.push(`tcp:${hostPort(addr.hostname, addr.port)}`);
    }
  }

  const metricsServer = metrics === undefined || ks.metrics === undefined ? undefined : await serveMetrics(ks.metrics, () => metrics.render(), metrics.contentType);
  if (metricsServer !== undefined) where.push(`metrics:http://${hostPort(metricsServer.addr.hostname, metricsServer.addr.port)}/metrics`);

  // Stops accepting, lets every connection answer what it has read and end its stream, for
  // KEYCELL_DRAIN_MS at most (a client that does not read its answers cannot hold the stop), then
  // writes the audit log out.
  let stopping: Promise<void> | undefined;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const drain = async () => {
    const [{ cut }] = await Promise.all([server.close(config.drainMs), metricsServer?.server.shutdown()]);
    if (cut > 0) log.warn(`stopped waiting for ${cut} connection${cut === 1 ? "" : "s"} after ${config.drainMs} ms`, { drainMs: config.drainMs, cut });
    await audit?.close();
  };
  const stop = () => stopping ??= drain().then(stopped);
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  // Log rotation, as for `serve`: move the file away, then SIGHUP.
  Deno.addSignalListener("SIGHUP", () => {
    audit?.reopen().catch((err) => log.error(`cannot reopen the audit log ${ks.auditLog}: ${(err as Error).message}`));
  });
  if (ks.exitWithParent) {
    (async () => {
      const buffer = new Uint8Array(64);
      try {
        while ((await Deno.stdin.read(buffer)) !== null) { /* nothing is sent; wait for the end */ }
      } catch {
        // stdin closed
      }
      stop();
    })();
  }
  const keys = await store.count();
  const guests = `${instances} guest${instances === 1 ? "" : "s"}`;
  log.info(`ready on ${where.join(", ")} (keys: ${keys}, ${guest.description}) with ${guests}, at most ${maxConnections} connections`, {
    listeners: where,
    keys,
    guest: guest.description,
    instances,
    maxConnections,
  });
  await done;
  // A pending read of stdin would keep the process alive.
  Deno.exit(0);
}
