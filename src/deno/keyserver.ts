/**
 * `keycell keyserver`: a separate OS process that hosts the signer compartment and serves it over
 * the Keyless SSL protocol, on a Unix socket (mode 0600, also carrying keycell's own protocol for
 * the `process` signer mode) and on TCP (optionally TLS with client certificates).
 *
 * @module
 */

import { AuditLog } from "./audit_log.ts";
import { loadConfig, loadKeyserverConfig } from "./config.ts";
import { type ChosenGuest, chooseGuest } from "./guest.ts";
import { startSealedSigner } from "./sealed_start.ts";
import { openKeyStore } from "./store/open.ts";
import { type KeylessAuditRecord, KeylessServer } from "../keyless/server.ts";
import { storeBackedSigner } from "../keyless/store_signer.ts";

/**
 * Runs the key server until SIGINT or SIGTERM (or stdin closing, when started by a host),
 * configured by the `KEYCELL_*` environment variables.
 *
 * @example
 * ```ts
 * import { runKeyserver } from "./keyserver.ts";
 *
 * if (Deno.args[0] === "keyserver") await runKeyserver();
 * ```
 */
export async function runKeyserver(): Promise<void> {
  const env = (name: string) => Deno.env.get(name);
  const config = loadConfig(env);
  const ks = loadKeyserverConfig(env);
  Deno.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  let audit: AuditLog<KeylessAuditRecord> | undefined;
  try {
    if (ks.auditLog !== undefined) audit = AuditLog.open<KeylessAuditRecord>(ks.auditLog);
  } catch (err) {
    console.error(`keycell keyserver: cannot start: cannot open the audit log ${ks.auditLog}: ${(err as Error).message}`);
    Deno.exit(1);
  }

  // The same sealed keys as `serve`: the same master key and store, and as `serve` a pool of
  // guests in workers, one per core unless KEYCELL_SIGNER_INSTANCES says otherwise.
  const store = await openKeyStore(config).catch((err) => {
    console.error(`keycell keyserver: cannot open the key store: ${(err as Error).message}`);
    Deno.exit(1);
  });
  let guest: ChosenGuest;
  try {
    guest = chooseGuest(config);
  } catch (err) {
    console.error(`keycell keyserver: cannot start: ${(err as Error).message}`);
    Deno.exit(1);
  }
  const inline = config.signer === "inline";
  const instances = inline ? 1 : config.signerInstances;
  const started = await startSealedSigner({
    mode: inline ? "inline" : "worker",
    wasm: guest.wasm,
    store,
    masterKeyPath: `${config.dataDir}/master.key`,
    instances,
    cacheBytes: config.keyCacheBytes,
    recheckMs: config.keyRecheckMs,
    importKeysDir: config.importKeysDir,
  }).catch((err) => {
    console.error(`keycell keyserver: cannot start: ${(err as Error).message}`);
    Deno.exit(1);
  });
  const { signer: sealed, transport, keyFiles } = started;
  if (started.createdMasterKey) console.log(`keycell keyserver: created the master key ${config.dataDir}/master.key; back it up`);
  for (const f of keyFiles) {
    console.log(f.error ? `keycell keyserver: skipped ${f.file}: ${f.error}` : `keycell keyserver: imported ${f.file} as ${f.keySpec} ${f.id}`);
  }
  const server = new KeylessServer({
    signer: storeBackedSigner(sealed, (request) => transport.request(request)),
    // The store's index of SKIs and certificate digests: one query a request, at any number of keys.
    keys: sealed,
    keyFiles: () => keyFiles,
    maxPendingPerConnection: ks.maxPendingPerConnection,
    concurrency: instances,
    audit,
  });
  await server.listenUnix(config.keyserverSocket);
  const where = [`unix:${config.keyserverSocket}`];
  if (ks.tcp !== undefined) {
    if (ks.tlsCert !== undefined && ks.tlsKey !== undefined) {
      const addr = await server.listenTls({
        ...ks.tcp,
        cert: Deno.readTextFileSync(ks.tlsCert),
        key: Deno.readTextFileSync(ks.tlsKey),
        clientCa: ks.clientCa === undefined ? undefined : Deno.readTextFileSync(ks.clientCa),
      });
      where.push(`tls:${hostPort(addr.hostname, addr.port)}${ks.clientCa ? " (client certificates required)" : ""}`);
    } else {
      const addr = server.listenTcp(ks.tcp);
      where.push(`tcp:${hostPort(addr.hostname, addr.port)}`);
    }
  }

  let stopping: Promise<void> | undefined;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const stop = () => stopping ??= server.close().then(() => audit?.close()).then(stopped);
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  // Log rotation, as for `serve`: move the file away, then SIGHUP.
  Deno.addSignalListener("SIGHUP", () => {
    audit?.reopen().catch((err) => console.error(`keycell keyserver: cannot reopen the audit log ${ks.auditLog}: ${(err as Error).message}`));
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
  console.log(`keycell keyserver ready on ${where.join(", ")} (keys: ${await store.count()}, ${guest.description}) with ${instances} guest${instances === 1 ? "" : "s"}`);
  await done;
  // A pending read of stdin would keep the process alive.
  Deno.exit(0);
}

function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}
