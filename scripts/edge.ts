/**
 * keycell on workerd: builds the two Workers and runs them locally.
 *
 *   deno task edge:build   bundles `keycell-api` and `keycell-signer` into dist/edge/api/ and
 *                          dist/edge/signer/, each with its wrangler.jsonc, and writes the workerd
 *                          configs: config.capnp (one process), api.capnp and signer.capnp (two)
 *   deno task edge:check   builds, then has wrangler (installed from npm with the Node it needs, as
 *                          tools/wrangler/package-lock.json pins them) check both Workers with
 *                          `wrangler deploy --dry-run`
 *   deno task edge         builds, then runs the Workers on workerd (installed from npm at the
 *                          version tools/workerd/package-lock.json pins) with `serve`'s
 *                          conventions: KEYCELL_LISTEN, KEYCELL_DATA_DIR, admin.token,
 *                          tokens.json, master.key; KEYCELL_SIGNER=process puts the signer in a
 *                          workerd process of its own; stops on SIGTERM/SIGINT, workerd included;
 *                          KEYCELL_EDGE_INSPECTOR=HOST:PORT (tests, debugging) opens the V8
 *                          inspector of the workerd process that runs the api Worker
 *
 * The master key is made on first start here, by a guest in this process exactly as `serve`
 * makes it, because the signer Worker reads it through a read-only `disk` service.
 *
 * One script of about 440 lines: its three tasks share the build, the paths and the installation
 * of the pinned tools, and none of it is imported by keycell itself.
 *
 * @module
 */

import { loadConfig, loadLogSettings } from "../src/deno/config.ts";
import { fileExists } from "../src/deno/sealed_start.ts";
import { loadTokenEntries } from "../src/deno/tokens.ts";
import { openCompartment } from "../src/guest/files.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** Where the build goes (git-ignored). */
export const DIST = `${ROOT}dist/edge`;
const WORKERD_DIR = `${ROOT}tools/workerd`;
const WRANGLER_DIR = `${ROOT}tools/wrangler`;

/** The compatibility date of the pinned workerd (`nodejs_compat` is on by default from 2026-08-04). */
const COMPATIBILITY_DATE = "2026-11-17";

/** Names of the environment variables workerd's `fromEnvironment` bindings read. */
const ENV = {
  tokens: "KEYCELL_EDGE_TOKENS",
  masterKeyId: "KEYCELL_EDGE_MASTER_KEY_ID",
  cacheBytes: "KEYCELL_EDGE_KEY_CACHE_BYTES",
  faultInjection: "KEYCELL_EDGE_FAULT_INJECTION",
  maxBodyBytes: "KEYCELL_EDGE_MAX_BODY_BYTES",
  maxInFlight: "KEYCELL_EDGE_MAX_IN_FLIGHT",
  logLevel: "KEYCELL_EDGE_LOG_LEVEL",
  logFormat: "KEYCELL_EDGE_LOG_FORMAT",
} as const;

/** Both Workers' log bindings (src/workerd/log.ts): KEYCELL_LOG_LEVEL and KEYCELL_LOG_FORMAT. */
const LOG_BINDINGS = `
    (name = "LOG_LEVEL", fromEnvironment = "${ENV.logLevel}"),
    (name = "LOG_FORMAT", fromEnvironment = "${ENV.logFormat}"),`;

/** The store's directory inside the data directory. */
const STORE_DIR = "edge-store";

const HEADER = `# Written by scripts/edge.ts (deno task edge:build); paths, sockets and the listen address
# are set by \`deno task edge\` with --socket-addr, --external-addr and --directory-path.
using Workerd = import "/workerd/workerd.capnp";
`;

/** The signer's RPC socket in the two-process layout: Cap'n Proto, no HTTP framing. */
const SIGNER_SOCKET = `(address = "unix:/nonexistent/signer.sock", http = (capnpConnectHost = "capnp"))`;

const API_SERVICES = `
    (name = "keycell-api", worker = .api),
    # The Durable Object's SQLite files: sealed blobs and public keys.
    (name = "store", disk = (path = "/nonexistent", writable = true)),`;

const SIGNER_SERVICES = `
    (name = "keycell-signer", worker = .signer),
    # The master key, for the signer alone; read-only.
    (name = "secrets", disk = (path = "/nonexistent", writable = false)),`;

const NOWHERE = `
    (name = "nowhere", network = (allow = [])),`;

const HTTP_SOCKET = `(name = "http", address = "127.0.0.1:8787", http = (), service = "keycell-api")`;

/** The api Worker; `signer` is its SIGNER service designator. */
function apiWorker(signer: string): string {
  return `
const api :Workerd.Worker = (
  modules = [(name = "api.js", esModule = embed "api/api.js")],
  compatibilityDate = "${COMPATIBILITY_DATE}",
  bindings = [
    (name = "SIGNER", service = ${signer}),
    (name = "KEYS", durableObjectNamespace = "KeyStoreObject"),
    (name = "TOKENS", fromEnvironment = "${ENV.tokens}"),
    (name = "FAULT_INJECTION", fromEnvironment = "${ENV.faultInjection}"),
    (name = "MAX_BODY_BYTES", fromEnvironment = "${ENV.maxBodyBytes}"),
    (name = "MAX_IN_FLIGHT", fromEnvironment = "${ENV.maxInFlight}"),${LOG_BINDINGS}
  ],
  durableObjectNamespaces = [(className = "KeyStoreObject", uniqueKey = "keycell-keys", enableSql = true)],
  durableObjectStorage = (localDisk = "store"),
  globalOutbound = "nowhere",
);
`;
}

const SIGNER_WORKER = `
const signer :Workerd.Worker = (
  modules = [
    (name = "signer.js", esModule = embed "signer/signer.js"),
    (name = "signer.wasm", wasm = embed "signer/signer.wasm"),
  ],
  compatibilityDate = "${COMPATIBILITY_DATE}",
  bindings = [
    (name = "SECRETS", service = "secrets"),
    (name = "MASTER_KEY_ID", fromEnvironment = "${ENV.masterKeyId}"),
    (name = "KEY_CACHE_BYTES", fromEnvironment = "${ENV.cacheBytes}"),${LOG_BINDINGS}
  ],
  globalOutbound = "nowhere",
);
`;

/** The workerd configs: both Workers in one process, or each in its own. */
const CONFIGS = {
  "config.capnp": `${HEADER}
const config :Workerd.Config = (
  services = [${API_SERVICES}${SIGNER_SERVICES}${NOWHERE}
  ],
  sockets = [${HTTP_SOCKET}],
);
${apiWorker(`(name = "keycell-signer", entrypoint = "Signer")`)}${SIGNER_WORKER}`,
  "api.capnp": `${HEADER}
const config :Workerd.Config = (
  services = [${API_SERVICES}${NOWHERE}
    # The signer process, over its Unix socket.
    (name = "keycell-signer", external = ${SIGNER_SOCKET}),
  ],
  sockets = [${HTTP_SOCKET}],
);
${apiWorker(`"keycell-signer"`)}`,
  "signer.capnp": `${HEADER}
const config :Workerd.Config = (
  services = [${SIGNER_SERVICES}${NOWHERE}
  ],
  sockets = [(name = "signer", service = (name = "keycell-signer", entrypoint = "Signer"), ${SIGNER_SOCKET.slice(1, -1)})],
);
${SIGNER_WORKER}`,
};

/**
 * Bundles both Workers and writes the workerd config into dist/edge/.
 *
 * @example
 * ```ts
 * await build();
 * ```
 */
export async function build(): Promise<void> {
  await Deno.remove(DIST, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${DIST}/api`, { recursive: true });
  await Deno.mkdir(`${DIST}/signer`, { recursive: true });
  await bundle(`${ROOT}src/workerd/api_worker.ts`, `${DIST}/api/api.js`);
  await bundle(`${ROOT}src/workerd/signer_entry.js`, `${DIST}/signer/signer.js`);
  await Deno.copyFile(`${ROOT}wasm/signer.wasm`, `${DIST}/signer/signer.wasm`);
  for (const [name, text] of Object.entries(CONFIGS)) await Deno.writeTextFile(`${DIST}/${name}`, text);
  await Deno.writeTextFile(`${DIST}/api/wrangler.jsonc`, WRANGLER_HEADER + JSON.stringify(WRANGLER_API, null, 2) + "\n");
  await Deno.writeTextFile(`${DIST}/signer/wrangler.jsonc`, WRANGLER_HEADER + JSON.stringify(WRANGLER_SIGNER, null, 2) + "\n");
}

const WRANGLER_HEADER = `// Written by scripts/edge.ts (deno task edge:build): deploy from this directory with
// \`wrangler deploy\`. One directory per Worker, so a secret put for one is never the other's.
`;

/** The api Worker on Cloudflare; its TOKENS (the tokens.json form: hashes and scopes) is a secret. */
const WRANGLER_API = {
  name: "keycell-api",
  main: "api.js",
  compatibility_date: COMPATIBILITY_DATE,
  // Deployed as built and tested: deno bundle made api.js.
  no_bundle: true,
  services: [{ binding: "SIGNER", service: "keycell-signer", entrypoint: "Signer" }],
  durable_objects: { bindings: [{ name: "KEYS", class_name: "KeyStoreObject" }] },
  migrations: [{ tag: "v1", new_sqlite_classes: ["KeyStoreObject"] }],
  vars: { MAX_BODY_BYTES: "65536", MAX_IN_FLIGHT: "256", FAULT_INJECTION: "0", LOG_LEVEL: "info", LOG_FORMAT: "text" },
};

/**
 * The signer Worker on Cloudflare: no public URL, its MASTER_KEY a secret, and a key cache well
 * inside an isolate's 128 MB.
 */
const WRANGLER_SIGNER = {
  name: "keycell-signer",
  main: "signer.js",
  compatibility_date: COMPATIBILITY_DATE,
  no_bundle: true,
  rules: [{ type: "CompiledWasm", globs: ["**/*.wasm"], fallthrough: false }],
  workers_dev: false,
  preview_urls: false,
  vars: { MASTER_KEY_ID: "", KEY_CACHE_BYTES: String(32 * 1024 * 1024), LOG_LEVEL: "info", LOG_FORMAT: "text" },
};

async function bundle(entry: string, output: string): Promise<void> {
  const externals = ["cloudflare:workers", "node:*", "*.wasm"].flatMap((e) => ["--external", e]);
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", ...externals, "--output", output, entry],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`deno bundle ${entry} failed:\n${new TextDecoder().decode(stderr)}`);
}

/** Installs a tools/ directory's pinned packages with `npm ci` unless `binary` is there already. */
async function installed(dir: string, binary: string): Promise<string> {
  if (await exists(binary)) return binary;
  console.error(`keycell: installing ${dir.slice(ROOT.length)} (package-lock.json) ...`);
  const { success } = await new Deno.Command("npm", {
    args: ["ci", "--no-audit", "--no-fund", "--loglevel=error"],
    cwd: dir,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!success || !(await exists(binary))) throw new Error(`npm ci in ${dir} failed`);
  return binary;
}

/**
 * Checks both Workers as Cloudflare would take them: `wrangler deploy --dry-run` in each Worker's
 * directory. Resolves with wrangler's output for each.
 *
 * @example
 * ```ts
 * await build();
 * const { api, signer } = await dryRun();
 * ```
 */
export async function dryRun(): Promise<Record<"api" | "signer", string>> {
  const node = await installed(WRANGLER_DIR, `${WRANGLER_DIR}/node_modules/.bin/node`);
  const wrangler = `${WRANGLER_DIR}/node_modules/wrangler/bin/wrangler.js`;
  const out = await Deno.makeTempDir({ prefix: "keycell-wrangler-" });
  try {
    const results = {} as Record<"api" | "signer", string>;
    for (const worker of ["api", "signer"] as const) {
      const { success, stdout, stderr } = await new Deno.Command(node, {
        args: [wrangler, "deploy", "--dry-run", "--outdir", `${out}/${worker}`],
        cwd: `${DIST}/${worker}`,
        env: { WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", HOME: out },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
      if (!success) throw new Error(`wrangler deploy --dry-run failed for ${worker}:\n${text}`);
      results[worker] = text;
    }
    return results;
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

/**
 * The workerd binary for this platform, installed with `npm ci` from the pinned lock when missing.
 *
 * @example
 * ```ts
 * const workerd = await workerdBinary();
 * ```
 */
export async function workerdBinary(): Promise<string> {
  const arch = { x86_64: "64", aarch64: "arm64" }[Deno.build.arch as string];
  const os = { linux: "linux", darwin: "darwin" }[Deno.build.os as string];
  if (arch === undefined || os === undefined) throw new Error(`workerd has no build for ${Deno.build.os} ${Deno.build.arch}`);
  // The real binary, not the npm shim: the shim runs it as a child and does not pass on SIGTERM.
  return await installed(WORKERD_DIR, `${WORKERD_DIR}/node_modules/@cloudflare/workerd-${os}-${arch}/bin/workerd`);
}

/**
 * Makes the master key on first start, with a guest in this process as `serve` does, and answers
 * its id (not secret), which the signer Worker checks on every load. Refuses to make one over an
 * existing store, whose keys a new master key could not open.
 */
function masterKeyId(dataDir: string, wasm: Uint8Array): { id: string; created: boolean } {
  const masterKeyPath = `${dataDir}/master.key`;
  const created = !fileExists(masterKeyPath);
  // This store, or `serve`'s in the same directory: either was sealed under the missing key.
  const stores = [`${dataDir}/${STORE_DIR}`, `${dataDir}/keys.db`].filter((path) =>
    fileExists(path) && (!Deno.statSync(path).isDirectory || [...Deno.readDirSync(path)].length > 0)
  );
  if (created && stores.length > 0) {
    throw new Error(`the master key ${masterKeyPath} is missing, but keys sealed under it are stored in ${stores.join(" and ")}; restore that file`);
  }
  const compartment = openCompartment({ wasm, masterKeyPath, createMasterKey: created });
  return { id: compartment.masterKeyId!, created };
}

/** One workerd process the launcher started. */
interface Workerd {
  name: string;
  child: Deno.ChildProcess;
  exited: Promise<Deno.CommandStatus>;
}

/** Where the signer's socket lives in the two-process layout; 0700, as the socket has no authentication. */
const RUN_DIR = "edge-run";

/**
 * Builds, then runs workerd until SIGTERM or SIGINT; resolves with the exit code. With
 * KEYCELL_SIGNER=process the signer Worker runs in a workerd process of its own, reached over a
 * Unix socket, so the api process holds no guest at all; otherwise both Workers share one process
 * (two isolates).
 */
async function run(): Promise<number> {
  const config = loadConfig((name) => Deno.env.get(name));
  if (config.signer === "inline") {
    throw new Error("KEYCELL_SIGNER=inline does not apply to workerd: worker (two isolates, one process) or process (two processes)");
  }
  await build();
  const binary = await workerdBinary();
  Deno.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  Deno.mkdirSync(`${config.dataDir}/${STORE_DIR}`, { recursive: true, mode: 0o700 });
  const { entries, createdAdminToken } = loadTokenEntries(config.dataDir);
  if (createdAdminToken) console.log(`keycell: no token was configured; created an admin token in ${createdAdminToken}`);
  const dataDir = await Deno.realPath(config.dataDir);
  const master = masterKeyId(dataDir, Deno.readFileSync(config.wasmPath));
  if (master.created) console.log(`keycell: created the master key ${config.dataDir}/master.key; back it up, sealed keys open only with it`);
  console.log(`keycell: master key id ${master.id}`);

  const port = config.port === 0 ? freePort(config.hostname) : config.port;
  const host = config.hostname.includes(":") ? `[${config.hostname}]` : config.hostname;
  const log = loadLogSettings((name) => Deno.env.get(name));
  const logEnv = { [ENV.logLevel]: log.level, [ENV.logFormat]: log.format };
  const apiEnv = {
    ...logEnv,
    [ENV.tokens]: JSON.stringify({ tokens: entries }),
    [ENV.faultInjection]: config.faultInjection ? "1" : "0",
    [ENV.maxBodyBytes]: String(config.maxBodyBytes),
    [ENV.maxInFlight]: String(config.maxInFlight),
  };
  const signerEnv = { [ENV.masterKeyId]: master.id, [ENV.cacheBytes]: String(config.keyCacheBytes), ...logEnv };
  const http = ["--socket-addr", `http=${host}:${port}`, "--directory-path", `store=${dataDir}/${STORE_DIR}`];
  const secrets = ["--directory-path", `secrets=${dataDir}`];
  // For tests and debugging only: the V8 inspector of the process that runs the api Worker. In the
  // one-process layout it reaches the signer's isolate too, guest memory included.
  const inspectorAddr = Deno.env.get("KEYCELL_EDGE_INSPECTOR");
  const inspector = inspectorAddr ? ["--inspector-addr", inspectorAddr] : [];

  // Started in order, stopped in reverse: a workerd with an RPC peer still connected does not stop.
  const started: Workerd[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () =>
    stopping ??= (async () => {
      for (const w of [...started].reverse()) {
        try {
          w.child.kill("SIGTERM");
        } catch {
          // already exited
        }
        await w.exited;
      }
    })();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const start = (name: string, args: string[], env: Record<string, string>): Workerd | undefined => {
    if (stopping !== undefined) return undefined;
    const child = new Deno.Command(binary, { args: ["serve", ...args], clearEnv: true, env, stdin: "null", stdout: "inherit", stderr: "inherit" })
      .spawn();
    const w = { name, child, exited: child.status };
    started.push(w);
    return w;
  };

  let socket: string | undefined;
  try {
    if (config.signer === "process") {
      const runDir = `${dataDir}/${RUN_DIR}`;
      Deno.mkdirSync(runDir, { recursive: true, mode: 0o700 });
      Deno.chmodSync(runDir, 0o700);
      socket = `${runDir}/signer.sock`;
      // workerd leaves its socket file behind, and will not bind over it.
      await Deno.remove(socket).catch(() => {});
      const signer = start("signer", ["--socket-addr", `signer=unix:${socket}`, ...secrets, `${DIST}/signer.capnp`], signerEnv);
      if (signer && await ready(() => Deno.connect({ transport: "unix", path: socket! }), signer.exited)) {
        start("api", [...http, ...inspector, "--external-addr", `keycell-signer=unix:${socket}`, `${DIST}/api.capnp`], apiEnv);
      }
    } else {
      start("api and signer", [...http, ...inspector, ...secrets, `${DIST}/config.capnp`], { ...apiEnv, ...signerEnv });
    }
    // A wildcard address is reached through loopback.
    const target = { "0.0.0.0": "127.0.0.1", "::": "::1" }[config.hostname] ?? config.hostname;
    const api = started.at(-1);
    if (api === undefined) return 0;
    if (api.name !== "signer" && await ready(() => Deno.connect({ hostname: target, port }), api.exited)) {
      const layout = config.signer === "process" ? "workerd, signer process" : "workerd";
      console.log(`keycell ready on http://${host}:${port} (signer: service, ${layout})`);
    }
    // Runs until a signal stops every process, or one ends by itself (and the others are stopped).
    const first = await Promise.race(started.map(async (w) => ({ w, status: await w.exited })));
    if (stopping !== undefined) return 0;
    console.error(`keycell: workerd (${first.w.name}) exited with ${first.status.signal ?? first.status.code}`);
    return 1;
  } finally {
    await stop();
    if (socket !== undefined) await Deno.remove(socket).catch(() => {});
  }
}

/** Waits until `connect` succeeds; false when the process exits first. */
async function ready(connect: () => Promise<Deno.Conn>, exited: Promise<unknown>): Promise<boolean> {
  let gone = false;
  exited.then(() => gone = true);
  while (!gone) {
    try {
      (await connect()).close();
      return true;
    } catch (err) {
      if (!(err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.NotFound)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return false;
}

/** A port free on `hostname` now (KEYCELL_LISTEN with port 0). */
function freePort(hostname: string): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

if (import.meta.main) {
  const command = Deno.args[0] ?? "run";
  try {
    if (command === "build") {
      await build();
      console.log(`keycell: built the Workers and the workerd config in ${DIST}`);
    } else if (command === "check") {
      await build();
      const results = await dryRun();
      for (const [worker, text] of Object.entries(results)) console.log(`keycell: wrangler deploy --dry-run (${worker}):\n${text.trim()}`);
    } else if (command === "run") {
      Deno.exit(await run());
    } else {
      console.error("usage: deno run scripts/edge.ts build | check | run");
      Deno.exit(2);
    }
  } catch (err) {
    console.error(`keycell: cannot start: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
