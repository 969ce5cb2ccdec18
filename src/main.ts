/**
 * keycell's command line: `serve` starts the HTTP signer; `keyserver` starts the Keyless SSL key server.
 *
 * @module
 */

import { createApp } from "./host/app.ts";
import { AuditLog } from "./deno/audit_log.ts";
import { serveResiliently } from "./deno/http_listener.ts";
import { loadConfig } from "./deno/config.ts";
import { chooseGuest } from "./deno/guest.ts";
import { Metrics } from "./host/metrics.ts";
import { startSigner } from "./deno/signer.ts";
import type { ProtocolSignerClient } from "./core/signer_client.ts";
import { KeyServerKeys } from "./deno/keyserver_keys.ts";
import { fileExists, startSealedSigner } from "./deno/sealed_start.ts";
import { openKeyStore } from "./deno/store/open.ts";
import { loadTokens } from "./deno/tokens.ts";
import { runKeyserver } from "./deno/keyserver.ts";
import { importKeyFile } from "./cli/import_key.ts";
import { runKeys } from "./cli/keys.ts";
import { runTokens } from "./cli/tokens.ts";
import { VERSION } from "./core/version.ts";
import { masterKeyFiles, rotateMasterKey } from "./cli/rotate_master_key.ts";

async function serve(): Promise<void> {
  const config = loadConfig((name) => Deno.env.get(name));
  Deno.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const { store, createdAdminToken } = loadTokens(config.dataDir);
  if (createdAdminToken) console.log(`keycell: no token was configured; created an admin token in ${createdAdminToken}`);
  const metrics = new Metrics();
  let audit: AuditLog | undefined;
  try {
    if (config.auditLog !== undefined) audit = AuditLog.open(config.auditLog, metrics);
  } catch (err) {
    console.error(`keycell: cannot start: cannot open the audit log ${config.auditLog}: ${(err as Error).message}`);
    Deno.exit(1);
  }

  // Keys live sealed in the key store; in `process` mode the key server opens the store and
  // chooses its guest itself.
  const mode = config.signer;
  let guest: ReturnType<typeof chooseGuest> | undefined;
  try {
    if (mode !== "process") guest = chooseGuest(config);
  } catch (err) {
    console.error(`keycell: cannot start: ${(err as Error).message}`);
    Deno.exit(1);
  }
  const wasm = guest?.wasm ?? new Uint8Array(0);
  const sealed = mode === "process" ? undefined : await openKeyStore(config).then((store) => startSealedSigner({
    mode,
    wasm,
    store,
    masterKeyPath: `${config.dataDir}/master.key`,
    instances: config.signerInstances,
    cacheBytes: config.keyCacheBytes,
    recheckMs: config.keyRecheckMs,
    importKeysDir: config.importKeysDir,
  })).catch((err) => {
    // A missing or wrong master key, or an unreachable store: say so plainly and stop.
    console.error(`keycell: cannot start: ${(err as Error).message}`);
    Deno.exit(1);
  });
  if (sealed?.createdMasterKey) console.log(`keycell: created the master key ${config.dataDir}/master.key; back it up, sealed keys open only with it`);
  const { client, keyFiles, keyServerGuest } = sealed ? { client: sealed.signer, keyFiles: sealed.keyFiles, keyServerGuest: undefined } : await startSigner(config.signer, { wasm, keysDir: config.keysDir }, {
    instances: config.signerInstances,
    process: {
      socketPath: config.keyserverSocket,
      keysDir: config.importKeysDir,
      ...(config.wasmOverridden ? { wasmPath: config.wasmPath } : {}),
      dataDir: config.dataDir,
    },
  });
  const guestDescription = guest?.description ?? (keyServerGuest === undefined ? "guest: the key server's" : `guest: ${keyServerGuest}`);
  for (const f of keyFiles) {
    console.log(f.error ? `keycell: skipped ${f.file}: ${f.error}` : `keycell: loaded ${f.file} as ${f.keySpec} ${f.id}`);
  }

  const app = createApp({
    signer: client,
    // In `process` mode the key server holds the store and answers the sealed-key routes.
    keys: sealed?.signer ?? (config.signer === "process" ? new KeyServerKeys(client as ProtocolSignerClient) : undefined),
    tokens: store,
    maxBodyBytes: config.maxBodyBytes,
    maxInFlight: config.maxInFlight,
    faultInjection: config.faultInjection,
    metrics,
    audit,
  });
  const reloadTokens = () => {
    try {
      store.replace(loadTokens(config.dataDir).store);
      console.log(`keycell: reloaded the tokens (${store.size})`);
    } catch (err) {
      console.error(`keycell: kept the tokens in force; cannot reload them: ${(err as Error).message}`);
    }
  };
  // SIGHUP: tokens.json is read again, and the audit log reopened after a rotation moved it away.
  Deno.addSignalListener("SIGHUP", () => {
    reloadTokens();
    audit?.reopen().catch((err) => console.error(`keycell: cannot reopen the audit log ${config.auditLog}: ${(err as Error).message}`));
  });
  // Watching starts before the ready line, so a change made as soon as the server is up is seen.
  watchTokens(config.dataDir, reloadTokens);
  const server = serveResiliently({
    hostname: config.hostname,
    port: config.port,
    reusePort: config.reusePort,
    onListen: ({ hostname, port }) => {
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      console.log(`keycell ready on http://${host}:${port} (signer: ${client.mode}, ${guestDescription}, keys: ${keyFiles.filter((f) => f.id).length})`);
    },
  }, app.fetch);

  // Stops accepting at once, gives requests in flight until the drain deadline (a client that
  // never finishes its body cannot hold the server), writes the audit log out, and exits 0.
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drained = await Promise.race([
      server.shutdown().then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), config.drainMs)),
    ]);
    clearTimeout(timer);
    if (!drained) console.error(`keycell: stopped waiting for requests in flight after ${config.drainMs} ms`);
    await audit?.close();
    await client.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
}

/**
 * Calls `reload` when tokens.json in `dataDir` changes (`keycell tokens`, an editor), once per
 * burst of changes, for as long as the process runs.
 */
function watchTokens(dataDir: string, reload: () => void): void {
  const watcher = Deno.watchFs(dataDir, { recursive: false });
  let timer: ReturnType<typeof setTimeout> | undefined;
  (async () => {
    for await (const event of watcher) {
      if (!event.paths.some((path) => path.endsWith("/tokens.json"))) continue;
      clearTimeout(timer);
      timer = setTimeout(reload, 100);
    }
  })().catch((err) => console.error(`keycell: stopped watching tokens.json: ${(err as Error).message}`));
}

/** `keycell rotate-master-key`; other nodes may run beside it (they refuse new keys until restarted). */
async function rotate(): Promise<void> {
  const config = loadConfig((name) => Deno.env.get(name));
  const files = masterKeyFiles(config.dataDir);
  const store = await openKeyStore(config);
  try {
    const report = await rotateMasterKey({ wasm: Deno.readFileSync(config.wasmPath), store, dataDir: config.dataDir });
    const wrapping = report.wrappingKey ? " and the wrapping key" : "";
    const keys = `${report.resealed} key${report.resealed === 1 ? "" : "s"}`;
    console.log(`keycell: resealed ${keys}${wrapping} under the new master key ${report.masterKeyId}`);
    console.log(`keycell: ${files.current} is the new master key: back it up and copy it to every node sharing the store`);
    console.log(`keycell: ${files.previous} holds the old one (${report.previousId}); delete it once backups hold the new one`);
    if (report.unopenable.length > 0) {
      console.log(`keycell: warning: ${report.unopenable.length} keys opened under neither master key and were left as they were: ${report.unopenable.join(", ")}`);
    }
  } catch (err) {
    const unfinished = fileExists(files.next) ? ". Run it again to finish it; until then no node starts" : "; nothing was changed";
    console.error(`keycell: the rotation stopped: ${(err as Error).message}${unfinished}`);
    Deno.exit(1);
  } finally {
    await store.close();
  }
}

const USAGE = `usage: keycell <command>

  serve                       start the HTTP signer (KEYCELL_* settings: see README.md)
  keyserver                   start the Keyless SSL key server
  keys <command> [--json]     list, create, get, pubkey, sign, delete keys of a running server
  tokens <command> [--json]   create, list, revoke API tokens (tokens.json in KEYCELL_DATA_DIR)
  import-key FILE [URL]       wrap a private key file here and import it into a running server
  rotate-master-key           reseal every stored key under a new master key
  --version                   print keycell's version`;

/** The server a client command talks to: KEYCELL_URL, else the address `serve` listens on. */
function clientSettings(): { url: string; token?: string } {
  const config = loadConfig((name) => Deno.env.get(name));
  const host = config.hostname.includes(":") ? `[${config.hostname}]` : config.hostname;
  const url = Deno.env.get("KEYCELL_URL") || `http://${host}:${config.port}`;
  let token = Deno.env.get("KEYCELL_TOKEN");
  try {
    token ??= Deno.readTextFileSync(`${config.dataDir}/admin.token`).trim();
  } catch {
    // No admin token here: the server will say 401, which names the problem.
  }
  return { url, token };
}

const command = Deno.args[0];
try {
  if (command === "serve") {
    await serve();
  } else if (command === "keyserver") {
    await runKeyserver();
  } else if (command === "keys") {
    Deno.exit(
      await runKeys(Deno.args.slice(1), {
        ...clientSettings(),
        out: (line) => console.log(line),
        err: (line) => console.error(line),
        readFile: (path) => Deno.readFileSync(path),
      }),
    );
  } else if (command === "tokens") {
    const dataDir = loadConfig((name) => Deno.env.get(name)).dataDir;
    Deno.exit(await runTokens(Deno.args.slice(1), { dataDir, out: (line) => console.log(line), err: (line) => console.error(line) }));
  } else if (command === "import-key" && Deno.args.length >= 2) {
    // keycell import-key FILE [URL]: the token comes from KEYCELL_TOKEN or <dataDir>/admin.token.
    const settings = clientSettings();
    const key = await importKeyFile({ url: Deno.args[2] ?? settings.url, token: settings.token ?? "", path: Deno.args[1] });
    console.log(`keycell: imported ${Deno.args[1]} as ${key.keySpec} ${key.id}`);
  } else if (command === "rotate-master-key") {
    await rotate();
  } else if (command === "--version" || command === "version") {
    console.log(`keycell ${VERSION}`);
  } else if (command === "--help" || command === "help" || command === "-h") {
    console.log(USAGE);
  } else {
    console.error(command === undefined ? USAGE : `keycell: unknown command ${JSON.stringify(command)}\n${USAGE}`);
    Deno.exit(2);
  }
} catch (err) {
  // A setting that does not parse, a port in use, a file that is not there: one line, no stack trace.
  const message = err instanceof Deno.errors.AddrInUse ? `the address is in use (${(err as Error).message})` : (err as Error).message;
  console.error(`keycell: ${message}`);
  Deno.exit(1);
}
