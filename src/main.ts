/**
 * keycell's command line: `serve` starts the HTTP signer; `keyserver` starts the Keyless SSL key server.
 *
 * @module
 */

import { createApp } from "./host/app.ts";
import type { AuditRecord } from "./host/audit.ts";
import { openAuditLog, reportKeyFiles, startKeyService } from "./deno/start.ts";
import { serveResiliently } from "./deno/http_listener.ts";
import { commandSettings, loadConfig, loadLogSettings, type Settings } from "./deno/config.ts";
import { configureLogging } from "./deno/log.ts";
import { getLog } from "./core/log.ts";
import { Metrics } from "./host/metrics.ts";
import { ProcessKeyService } from "./deno/process_transport.ts";
import { fileExists } from "./deno/sealed_start.ts";
import { openKeyStore } from "./deno/store/open.ts";
import { loadTokens } from "./deno/tokens.ts";
import { runKeyserver } from "./deno/keyserver.ts";
import { importKeyFile } from "./cli/import_key.ts";
import { runKeys } from "./cli/keys.ts";
import { withSpinner } from "./cli/spinner.ts";
import { runTokens } from "./cli/tokens.ts";
import { VERSION } from "./core/version.ts";
import { masterKeyFiles, rotateMasterKey } from "./cli/rotate_master_key.ts";

const log = getLog();

/** Signer calls of `serve` under way at once per guest; more wait in its bounded queue. */
const QUEUE_DEPTH_PER_GUEST = 32;

async function serve(settings: Settings): Promise<void> {
  const config = loadConfig(settings);
  Deno.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const { store, createdAdminToken } = loadTokens(config.dataDir);
  if (createdAdminToken) log.info(`no token was configured; created an admin token in ${createdAdminToken}`, { file: createdAdminToken });
  const metrics = new Metrics();
  const audit = openAuditLog<AuditRecord>(config.auditLog, log, metrics);

  // Keys live sealed in the key store. `process`: the key server holds the store and the guests,
  // and answers every route through the key-service RPC; this process never reads a key file nor
  // opens the store.
  // The key server chooses its guest itself (KEYCELL_GUEST reaches it through the environment or
  // the config file); a key server started here names it in its ready line, one already running
  // does not tell.
  const { client, keyFiles, guestDescription } = config.signer !== "process"
    ? await startKeyService(config, log).then(({ service, keyFiles, guest }) => ({ client: service, keyFiles, guestDescription: guest.description }))
    : await ProcessKeyService.start({
      socketPath: config.keyserverSocket,
      keysDir: config.importKeysDir,
      // KEYCELL_WASM, when set, replaces the key server's choice of guest; otherwise it chooses.
      ...(config.wasmOverridden ? { wasmPath: config.wasmPath } : {}),
      dataDir: config.dataDir,
      // An upgrade: the new `serve` starts a key server of its own, which takes the socket over,
      // since the old `serve` stops the one it started.
      takeOver: config.reusePort,
    }).then((remote) => {
      reportKeyFiles(remote.keyFiles, log);
      const guestDescription = remote.keyServerGuest === undefined ? "guest: the key server's" : `guest: ${remote.keyServerGuest}`;
      return { client: remote, keyFiles: remote.keyFiles, guestDescription };
    });

  const app = createApp({
    signer: client,
    keys: client,
    tokens: store,
    maxBodyBytes: config.maxBodyBytes,
    bodyTimeoutMs: config.bodyTimeoutMs,
    maxInFlight: config.maxInFlight,
    // Up to 32 calls per guest under way at once (in `process` mode the key server started with
    // these settings has as many guests): each call is a whole request on this thread, which
    // under load answers a guest some time after it has signed, so a guest needs a deep queue of
    // its own not to wait for this thread (2 per guest, as the key server runs them, left the
    // guests idle much of the time under load). The queue beyond them is the one bounded in time.
    queue: { concurrency: QUEUE_DEPTH_PER_GUEST * (config.signer === "inline" ? 1 : config.signerInstances), maxWaitMs: config.maxQueueWaitMs },
    faultInjection: config.faultInjection,
    metrics,
    audit,
  });
  const reloadTokens = () => {
    try {
      store.replace(loadTokens(config.dataDir).store);
      log.info(`reloaded the tokens (${store.size})`, { tokens: store.size });
    } catch (err) {
      log.error(`kept the tokens in force; cannot reload them: ${(err as Error).message}`);
    }
  };
  // SIGHUP: tokens.json is read again, and the audit log reopened after a rotation moved it away.
  Deno.addSignalListener("SIGHUP", () => {
    reloadTokens();
    audit?.reopen().catch((err) => log.error(`cannot reopen the audit log ${config.auditLog}: ${(err as Error).message}`));
  });
  // Watching starts before the ready line, so a change made as soon as the server is up is seen.
  watchTokens(config.dataDir, reloadTokens);
  const server = serveResiliently({
    hostname: config.hostname,
    port: config.port,
    reusePort: config.reusePort,
    maxConnections: config.maxConnections,
    headerTimeoutMs: config.headerTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    onListen: ({ hostname, port }) => {
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      const url = `http://${host}:${port}`;
      const keys = keyFiles.filter((f) => f.id).length;
      log.info(`ready on ${url} (signer: ${client.mode}, ${guestDescription}, keys: ${keys})`, { url, signer: client.mode, guest: guestDescription, keys });
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
    if (!drained) log.warn(`stopped waiting for requests in flight after ${config.drainMs} ms`, { drainMs: config.drainMs });
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
  })().catch((err) => log.error(`stopped watching tokens.json: ${(err as Error).message}`));
}

/** `keycell rotate-master-key`; other nodes may run beside it (they refuse new keys until restarted). */
async function rotate(settings: Settings): Promise<void> {
  const config = loadConfig(settings);
  const files = masterKeyFiles(config.dataDir);
  const store = await openKeyStore(config);
  try {
    const report = await rotateMasterKey({ wasm: Deno.readFileSync(config.wasmPath), store, dataDir: config.dataDir });
    const wrapping = report.wrappingKey ? " and the wrapping key" : "";
    const keys = `${report.resealed} key${report.resealed === 1 ? "" : "s"}`;
    log.info(`resealed ${keys}${wrapping} under the new master key ${report.masterKeyId}`, { resealed: report.resealed, masterKeyId: report.masterKeyId });
    log.info(`${files.current} is the new master key: back it up and copy it to every node sharing the store`, { file: files.current });
    log.info(`${files.previous} holds the old one (${report.previousId}); delete it once backups hold the new one`, { file: files.previous });
    if (report.unopenable.length > 0) {
      log.warn(`${report.unopenable.length} keys opened under neither master key and were left as they were: ${report.unopenable.join(", ")}`, { unopenable: report.unopenable });
    }
  } catch (err) {
    const unfinished = fileExists(files.next) ? ". Run it again to finish it; until then no node starts" : "; nothing was changed";
    log.error(`the rotation stopped: ${(err as Error).message}${unfinished}`);
    Deno.exit(1);
  } finally {
    await store.close();
  }
}

const USAGE = `usage: keycell <command> [--config FILE]

  serve                       start the HTTP signer (KEYCELL_* settings: see README.md)
  keyserver                   start the Keyless SSL key server
  keys <command> [--json]     list, create, get, rotate, disable, enable, delete, sign, verify, pubkey keys of a running server
  tokens <command> [--json]   create, list, revoke API tokens (tokens.json in KEYCELL_DATA_DIR)
  import-key FILE [URL] [--name NAME] [--description TEXT]
                              wrap a private key file here and import it into a running server
  rotate-master-key           reseal every stored key under a new master key
  --version                   print keycell's version

  --config FILE (or KEYCELL_CONFIG=FILE): a JSON object of KEYCELL_* settings; the environment wins over it`;

/** The server a client command talks to: KEYCELL_URL, else the address `serve` listens on. */
function clientSettings(settings: Settings): { url: string; token?: string } {
  const config = loadConfig(settings);
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

// Until the settings are read (they may not parse), the log is the default one.
configureLogging({ level: "info", format: "text" });
try {
  const { settings, args, configPath } = commandSettings(Deno.args, (name) => Deno.env.get(name), Deno.readTextFileSync);
  configureLogging(loadLogSettings(settings));
  // A key server started as a child (the `process` signer) reads the same file.
  if (configPath !== undefined) Deno.env.set("KEYCELL_CONFIG", configPath);
  const command = args[0];
  if (command === "serve") {
    await serve(settings);
  } else if (command === "keyserver") {
    await runKeyserver(settings);
  } else if (command === "keys") {
    Deno.exit(
      await runKeys(args.slice(1), {
        ...clientSettings(settings),
        out: (line) => console.log(line),
        err: (line) => console.error(line),
        readFile: (path) => Deno.readFileSync(path),
        progress: (label, work) => withSpinner(label, work),
      }),
    );
  } else if (command === "tokens") {
    const dataDir = loadConfig(settings).dataDir;
    Deno.exit(await runTokens(args.slice(1), { dataDir, out: (line) => console.log(line), err: (line) => console.error(line) }));
  } else if (command === "import-key" && args.length >= 2) {
    // keycell import-key FILE [URL] [--name NAME] [--description TEXT]: the token comes from
    // KEYCELL_TOKEN or <dataDir>/admin.token.
    const client = clientSettings(settings);
    const options: Record<string, string> = {};
    const positional: string[] = [];
    for (let i = 1; i < args.length; i++) {
      if (args[i] === "--name" || args[i] === "--description") {
        if (args[i + 1] === undefined) throw new Error(`import-key: ${args[i]} needs a value`);
        options[args[i].slice(2)] = args[++i];
      } else positional.push(args[i]);
    }
    const [path, url] = positional;
    const key = await importKeyFile({ url: url ?? client.url, token: client.token ?? "", path, ...options });
    console.log(`keycell: imported ${path} as ${key.keySpec} ${key.id}${key.name !== undefined && key.name !== key.id ? ` named ${key.name}` : ""}`);
  } else if (command === "rotate-master-key") {
    await rotate(settings);
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
  log.error(message);
  Deno.exit(1);
}
