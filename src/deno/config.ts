/**
 * Server configuration from the `KEYCELL_*` environment variables and, optionally, a JSON config
 * file of the same names (`KEYCELL_CONFIG=/path/keycell.json` or `--config /path/keycell.json`),
 * with the defaults a first run needs. Every setting has one zod schema, used for the environment
 * and the file alike; a variable set in the environment wins over the file.
 *
 * Over 400 lines because it is the one table of settings for `serve` and `keyserver`: each
 * setting's schema, default and doc comment stand together here, and split by command they would
 * repeat the settings both share.
 *
 * @module
 */

import { z } from "zod";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type OpsLogLevel } from "../core/log.ts";
import { DEFAULT_MAX_WAIT_MS } from "../core/scheduler.ts";
import { DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS } from "./http_listener.ts";

/** Everything `serve` needs to start. */
export interface Config {
  /** `.keycell` in the working directory unless KEYCELL_DATA_DIR says otherwise. */
  dataDir: string;
  /** `<dataDir>/keys` unless KEYCELL_KEYS_DIR says otherwise. */
  keysDir: string;
  hostname: string;
  port: number;
  signer: "worker" | "inline" | "process";
  /** The key server's Unix socket (`process` mode and `keyserver`): KEYCELL_KEYSERVER_SOCKET or `<dataDir>/keyserver.sock`. */
  keyserverSocket: string;
  /** Guest instances in `worker` mode; one per core unless KEYCELL_SIGNER_INSTANCES says otherwise. */
  signerInstances: number;
  maxBodyBytes: number;
  maxInFlight: number;
  /**
   * KEYCELL_MAX_QUEUE_WAIT_MS (default 5000): the longest a signer call of `serve` may wait for a
   * guest; one that would wait longer answers 503 `busy` at once.
   */
  maxQueueWaitMs: number;
  /** The 32-bit guest module (wasm/signer.wasm), or KEYCELL_WASM, which replaces the choice of guest. */
  wasmPath: string;
  /** Whether KEYCELL_WASM named the module: then it is used as it is, whatever KEYCELL_GUEST says. */
  wasmOverridden: boolean;
  /**
   * KEYCELL_GUEST: `baseline` (the default) runs the 32-bit guest; `auto` runs the wide guest
   * (wasm/signer-wide.wasm, 64-bit limbs, wasm wide arithmetic) for RSA keys and the 32-bit one
   * for EC keys when the engine runs it and it passes its self-test, else the 32-bit one alone;
   * `wide` runs the wide guest for every key or refuses to start. The wide guest verifies each
   * ECDSA signature it makes, which costs it about half of its ECDSA throughput against the
   * 32-bit guest, while it signs RSA 1.4-1.7x faster.
   */
  guest: GuestChoice;
  /** The wide guest module. */
  wideWasmPath: string;
  /**
   * KEYCELL_ENGINE: which WebAssembly engine runs the guests. `v8` (the default): Deno's own, in
   * Workers (or this isolate); `wasmtime`: each guest in a child process of its own
   * (`rust-signer/wasmtime-host`, Cranelift with wide arithmetic), so this process holds no key
   * byte at all. Not with KEYCELL_SIGNER=inline.
   */
  engine: Engine;
  /** KEYCELL_FAULT_INJECTION=1 adds the trap route the recovery tests use. */
  faultInjection: boolean;
  /** KEYCELL_KEYS_DIR when set: plaintext key files to import into the sealed store (opt-in). */
  importKeysDir?: string;
  /** Where sealed keys live: KEYCELL_STORE, `sqlite` (`<dataDir>/keys.db`, the default) or `postgres`. */
  store: "sqlite" | "postgres";
  /** KEYCELL_POSTGRES_URL, required when the store is `postgres`. */
  postgresUrl?: string;
  /** Budget of each guest's cache of unsealed keys: KEYCELL_KEY_CACHE_BYTES, default 64 MiB. */
  keyCacheBytes: number;
  /**
   * KEYCELL_KEY_RECHECK_MS, default 5000: a key deleted by another node sharing the store stops
   * signing here within this time (0: the store is asked before every signature).
   */
  keyRecheckMs: number;
  /** KEYCELL_AUDIT_LOG: a file to append one JSON line per request to, or `-` for standard output. */
  auditLog?: string;
  /**
   * KEYCELL_DRAIN_MS, default 10000: on SIGTERM or SIGINT, how long requests in flight (for the
   * key server, the requests it has read) may take to be answered; then the server stops whatever
   * clients are still doing.
   */
  drainMs: number;
  /** KEYCELL_BODY_TIMEOUT_MS, default 10000: how long a request body may take to arrive whole (then 408). */
  bodyTimeoutMs: number;
  /** KEYCELL_MAX_CONNECTIONS, default 4096: connections `serve` keeps open at once; more are closed as soon as they are accepted. */
  maxConnections: number;
  /** KEYCELL_HEADER_TIMEOUT_MS, default 10000: how long a new connection has to send a request's headers whole (then it is closed). */
  headerTimeoutMs: number;
  /**
   * KEYCELL_IDLE_TIMEOUT_MS, default 60000: how long a kept-alive connection has, after an answer,
   * to send its next request's headers whole (then it is closed).
   */
  idleTimeoutMs: number;
  /**
   * KEYCELL_REUSE_PORT=1: listen with SO_REUSEPORT, so a new `serve` or `keyserver` can start on
   * the same address before this one drains (a zero-downtime upgrade); a new key server also
   * takes over the Unix socket's path. Off by default, so a second server started by mistake
   * fails with "address in use" (or "already listening" on the socket).
   */
  reusePort: boolean;
}

const SIGNER_MODES = ["worker", "inline", "process"] as const;
const GUEST_CHOICES = ["auto", "wide", "baseline"] as const;
const ENGINES = ["v8", "wasmtime"] as const;
/** What KEYCELL_ENGINE may say. */
export type Engine = typeof ENGINES[number];
/** What KEYCELL_GUEST may say. */
export type GuestChoice = typeof GUEST_CHOICES[number];

/** Where settings come from: a lookup by variable name (the environment, or it over a file). */
export type Settings = (name: string) => string | undefined;

const HOST_PORT = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/;

/** Any text (an empty value counts as unset before it is read). */
const text = z.string();

function isHostPort(s: string): boolean {
  const match = HOST_PORT.exec(s);
  return match !== null && Number(match[2]) <= 65535;
}

/** `host:port`, the port at most 65535. */
const hostPort = z.string().refine(isHostPort, "must be host:port");

const integer = (min: 0 | 1) =>
  z.string()
    .refine((s) => Number.isSafeInteger(Number(s)) && Number(s) >= min, `must be a ${min === 0 ? "non-negative" : "positive"} integer`)
    .transform(Number);

const oneOf = <T extends string>(values: readonly [T, ...T[]]) => z.enum(values, { error: `must be one of ${values.join(", ")}` });

/**
 * Every setting a config file may hold, by its environment variable's name, with its validation.
 * A value reads as the variable's text would (numbers in the file are taken as their decimal text).
 */
const SETTINGS = {
  KEYCELL_DATA_DIR: text,
  KEYCELL_KEYS_DIR: text,
  KEYCELL_LISTEN: hostPort,
  KEYCELL_SIGNER: oneOf(SIGNER_MODES),
  KEYCELL_KEYSERVER_SOCKET: text,
  KEYCELL_SIGNER_INSTANCES: integer(1),
  KEYCELL_MAX_BODY_BYTES: integer(1),
  KEYCELL_MAX_IN_FLIGHT: integer(1),
  KEYCELL_MAX_QUEUE_WAIT_MS: integer(1),
  KEYCELL_WASM: text,
  KEYCELL_GUEST: oneOf(GUEST_CHOICES),
  KEYCELL_ENGINE: oneOf(ENGINES),
  KEYCELL_FAULT_INJECTION: oneOf(["0", "1"]),
  KEYCELL_STORE: oneOf(["sqlite", "postgres"]),
  KEYCELL_POSTGRES_URL: text,
  KEYCELL_KEY_CACHE_BYTES: integer(1),
  KEYCELL_KEY_RECHECK_MS: integer(0),
  KEYCELL_AUDIT_LOG: text,
  KEYCELL_DRAIN_MS: integer(0),
  KEYCELL_BODY_TIMEOUT_MS: integer(1),
  KEYCELL_MAX_CONNECTIONS: integer(1),
  KEYCELL_HEADER_TIMEOUT_MS: integer(1),
  KEYCELL_IDLE_TIMEOUT_MS: integer(1),
  KEYCELL_REUSE_PORT: oneOf(["0", "1"]),
  KEYCELL_KEYSERVER_LISTEN: z.string().refine((s) => s === "off" || isHostPort(s), "must be host:port or off"),
  KEYCELL_KEYSERVER_TLS_CERT: text,
  KEYCELL_KEYSERVER_TLS_KEY: text,
  KEYCELL_KEYSERVER_CLIENT_CA: text,
  KEYCELL_KEYSERVER_MAX_PENDING: integer(1),
  KEYCELL_KEYSERVER_MAX_CONNECTIONS: integer(1),
  KEYCELL_KEYSERVER_PROCESSES: integer(1),
  KEYCELL_KEYSERVER_MAX_QUEUE_WAIT_MS: integer(1),
  KEYCELL_KEYSERVER_METRICS_LISTEN: z.string().refine((s) => s === "off" || isHostPort(s), "must be host:port or off"),
  KEYCELL_KEYSERVER_AUDIT_LOG: text,
  KEYCELL_LOG_LEVEL: oneOf(LOG_LEVELS),
  KEYCELL_LOG_FORMAT: oneOf(LOG_FORMATS),
} as const;

type SettingName = keyof typeof SETTINGS;

/**
 * The names a config file may use: the `KEYCELL_*` variables of `serve` and `keyserver`.
 *
 * @example
 * ```ts
 * import { SETTING_NAMES } from "./config.ts";
 *
 * console.log(SETTING_NAMES.includes("KEYCELL_LISTEN")); // true
 * ```
 */
export const SETTING_NAMES: readonly string[] = Object.keys(SETTINGS);

/** The settings' values as their schemas read them; unset (or empty) ones are undefined. */
type Parsed = { [K in SettingName]?: z.output<(typeof SETTINGS)[K]> };

const ENV_SCHEMA = z.object(Object.fromEntries(Object.entries(SETTINGS).map(([name, schema]) => [name, schema.optional()])));

/** Reads every setting from `env` through its schema; throws an Error naming the first unusable one. */
function parse(env: Settings): Parsed {
  const raw: Record<string, string | undefined> = {};
  for (const name of SETTING_NAMES) raw[name] = env(name) || undefined;
  const result = ENV_SCHEMA.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const name = String(issue.path[0]);
    throw new Error(`${name} ${issue.message}, not ${JSON.stringify(raw[name])}`);
  }
  return result.data as Parsed;
}

/** `host:port` split; the text is valid (checked by its schema). */
function splitHostPort(listen: string): { hostname: string; port: number } {
  const match = HOST_PORT.exec(listen)!;
  return { hostname: match[1].replace(/^\[|\]$/g, ""), port: Number(match[2]) };
}

/**
 * Reads the configuration; throws an Error naming the variable when a value is unusable.
 *
 * @example
 * ```ts
 * const config = loadConfig((name) => Deno.env.get(name));
 * ```
 */
export function loadConfig(env: Settings): Config {
  const s = parse(env);
  const dataDir = s.KEYCELL_DATA_DIR ?? ".keycell";
  const store = s.KEYCELL_STORE ?? "sqlite";
  if (store === "postgres" && s.KEYCELL_POSTGRES_URL === undefined) throw new Error("KEYCELL_STORE=postgres needs KEYCELL_POSTGRES_URL");
  if (s.KEYCELL_ENGINE === "wasmtime" && s.KEYCELL_SIGNER === "inline") {
    throw new Error("KEYCELL_ENGINE=wasmtime runs each guest in a child process; it does not go with KEYCELL_SIGNER=inline");
  }
  return {
    dataDir,
    keysDir: s.KEYCELL_KEYS_DIR ?? `${dataDir}/keys`,
    ...splitHostPort(s.KEYCELL_LISTEN ?? "127.0.0.1:8787"),
    signer: s.KEYCELL_SIGNER ?? "worker",
    keyserverSocket: s.KEYCELL_KEYSERVER_SOCKET ?? `${dataDir}/keyserver.sock`,
    signerInstances: s.KEYCELL_SIGNER_INSTANCES ?? navigator.hardwareConcurrency,
    maxBodyBytes: s.KEYCELL_MAX_BODY_BYTES ?? 64 * 1024,
    maxInFlight: s.KEYCELL_MAX_IN_FLIGHT ?? 256,
    maxQueueWaitMs: s.KEYCELL_MAX_QUEUE_WAIT_MS ?? DEFAULT_MAX_WAIT_MS,
    wasmPath: s.KEYCELL_WASM ?? new URL("../../wasm/signer.wasm", import.meta.url).pathname,
    wasmOverridden: s.KEYCELL_WASM !== undefined,
    guest: s.KEYCELL_GUEST ?? "baseline",
    wideWasmPath: new URL("../../wasm/signer-wide.wasm", import.meta.url).pathname,
    engine: s.KEYCELL_ENGINE ?? "v8",
    faultInjection: s.KEYCELL_FAULT_INJECTION === "1",
    importKeysDir: s.KEYCELL_KEYS_DIR,
    store,
    postgresUrl: s.KEYCELL_POSTGRES_URL,
    keyCacheBytes: s.KEYCELL_KEY_CACHE_BYTES ?? 64 * 1024 * 1024,
    keyRecheckMs: s.KEYCELL_KEY_RECHECK_MS ?? 5_000,
    auditLog: s.KEYCELL_AUDIT_LOG,
    drainMs: s.KEYCELL_DRAIN_MS ?? 10_000,
    bodyTimeoutMs: s.KEYCELL_BODY_TIMEOUT_MS ?? 10_000,
    maxConnections: s.KEYCELL_MAX_CONNECTIONS ?? DEFAULT_MAX_CONNECTIONS,
    headerTimeoutMs: s.KEYCELL_HEADER_TIMEOUT_MS ?? DEFAULT_HEADER_TIMEOUT_MS,
    idleTimeoutMs: s.KEYCELL_IDLE_TIMEOUT_MS ?? DEFAULT_IDLE_TIMEOUT_MS,
    reusePort: s.KEYCELL_REUSE_PORT === "1",
  };
}

const FILE_SCHEMA = z.strictObject(
  Object.fromEntries(
    Object.entries(SETTINGS).map((
      [name, schema],
    ) => [
      name,
      z.union([z.string(), z.number()], { error: "must be a string or a number" })
        .transform((v) => String(v))
        .pipe(schema)
        .optional(),
    ]),
  ),
);

/**
 * Reads a config file's text: a JSON object whose keys are the `KEYCELL_*` variable names of
 * {@linkcode SETTING_NAMES} and whose values are strings or numbers, each checked as its variable
 * is. Throws a one-line Error naming the file and the key that is unknown or unusable.
 *
 * @example
 * ```ts
 * import { parseConfigFile } from "./config.ts";
 *
 * const file = parseConfigFile('{"KEYCELL_LISTEN": "0.0.0.0:8787", "KEYCELL_SIGNER_INSTANCES": 2}', "keycell.json");
 * console.log(file.KEYCELL_SIGNER_INSTANCES); // "2"
 * ```
 */
export function parseConfigFile(source: string, path: string): Record<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(source);
  } catch (err) {
    throw new Error(`${path} is not JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${path} must hold one JSON object of KEYCELL_* settings`);
  }
  const result = FILE_SCHEMA.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0];
    if (issue.code === "unrecognized_keys") {
      throw new Error(`${path}: unknown setting ${JSON.stringify(issue.keys[0])} (known: ${SETTING_NAMES.join(", ")})`);
    }
    const name = String(issue.path[0]);
    throw new Error(`${path}: ${name} ${issue.message}, not ${JSON.stringify((json as Record<string, unknown>)[name])}`);
  }
  const values: Record<string, string> = {};
  for (const [name, value] of Object.entries(json as Record<string, string | number>)) values[name] = String(value);
  return values;
}

/**
 * Settings from `env` first, then from a config file's values.
 *
 * @example
 * ```ts
 * import { layered, loadConfig } from "./config.ts";
 *
 * const settings = layered((name) => Deno.env.get(name), { KEYCELL_SIGNER: "inline" });
 * console.log(loadConfig(settings).signer); // "inline", unless KEYCELL_SIGNER says otherwise
 * ```
 */
export function layered(env: Settings, file: Readonly<Record<string, string>>): Settings {
  return (name) => env(name) || (Object.hasOwn(file, name) ? file[name] : undefined);
}

/**
 * The command line's settings: the environment over the config file named by `--config PATH`
 * (or `--config=PATH`) in `args`, else by KEYCELL_CONFIG. Returns `args` without the option and
 * the file's path, which the caller passes on to child processes as KEYCELL_CONFIG.
 *
 * @example
 * ```ts
 * import { commandSettings, loadConfig } from "./config.ts";
 *
 * const { settings, args } = commandSettings(Deno.args, (name) => Deno.env.get(name), Deno.readTextFileSync);
 * if (args[0] === "serve") console.log(loadConfig(settings).port);
 * ```
 */
export function commandSettings(
  args: readonly string[],
  env: Settings,
  readTextFile: (path: string) => string,
): { settings: Settings; args: string[]; configPath?: string } {
  const rest: string[] = [];
  let configPath = env("KEYCELL_CONFIG") || undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--config") {
      if (i + 1 >= args.length || args[i + 1] === "") throw new Error("--config needs a file path");
      configPath = args[++i];
    } else if (args[i].startsWith("--config=")) {
      configPath = args[i].slice("--config=".length);
      if (configPath === "") throw new Error("--config needs a file path");
    } else {
      rest.push(args[i]);
    }
  }
  if (configPath === undefined) return { settings: env, args: rest };
  let source: string;
  try {
    source = readTextFile(configPath);
  } catch (err) {
    throw new Error(`cannot read the config file ${configPath}: ${(err as Error).message}`);
  }
  return { settings: layered(env, parseConfigFile(source, configPath)), args: rest, configPath };
}

/** The operational log's settings, which every command reads. */
export interface LogSettings {
  /** KEYCELL_LOG_LEVEL: `debug`, `info` (the default), `warning` or `error`. */
  level: OpsLogLevel;
  /** KEYCELL_LOG_FORMAT: `text` (the default), the human lines; `json`, one object per line. */
  format: LogFormat;
}

/**
 * Reads KEYCELL_LOG_LEVEL and KEYCELL_LOG_FORMAT (and checks every other setting, as
 * {@linkcode loadConfig} does); throws an Error naming the variable when a value is unusable.
 *
 * @example
 * ```ts
 * import { loadLogSettings } from "./config.ts";
 *
 * loadLogSettings(() => undefined); // { level: "info", format: "text" }
 * ```
 */
export function loadLogSettings(env: Settings): LogSettings {
  const s = parse(env);
  return { level: s.KEYCELL_LOG_LEVEL ?? "info", format: s.KEYCELL_LOG_FORMAT ?? "text" };
}

/** What `keyserver` needs beyond {@linkcode Config}. */
export interface KeyserverConfig {
  /** The TCP listener; undefined when KEYCELL_KEYSERVER_LISTEN is `off`. */
  tcp?: { hostname: string; port: number };
  /** PEM file paths; TLS is on when both cert and key are set. */
  tlsCert?: string;
  tlsKey?: string;
  /** PEM file of the CAs whose client certificates are accepted; client certificates are required when set. */
  clientCa?: string;
  maxPendingPerConnection: number;
  /**
   * KEYCELL_KEYSERVER_MAX_CONNECTIONS (default 4096): connections open at once over every
   * listener; past it a new connection is closed at once. Kept below the open-file limit, a flood
   * meets this cap rather than running the process out of descriptors (Deno cannot read that
   * limit without every permission, so it is the operator's to match: README).
   */
  maxConnections: number;
  /**
   * KEYCELL_KEYSERVER_MAX_QUEUE_WAIT_MS (default 5000): the longest a request may wait for a guest.
   * Keyless requests carry no deadline, so this is the operator's, set well below the clients'
   * timeout: a request that would wait longer is refused at once with INTERNAL, rather than
   * answered after its client has given up on it.
   */
  maxQueueWaitMs: number;
  /**
   * KEYCELL_KEYSERVER_METRICS_LISTEN: where `GET /metrics` answers with the key server's metrics
   * (HTTP, no token: counts only, no key material); undefined when unset or `off`.
   */
  metrics?: { hostname: string; port: number };
  /**
   * KEYCELL_KEYSERVER_PROCESSES (default 1): key server processes sharing the TCP address
   * (src/deno/keyserver_processes.ts), each with one guest in its own isolate.
   */
  processes: number;
  /**
   * Which of those processes this is (KEYCELL_KEYSERVER_PROCESS, set by the one that starts
   * them): only the first serves the Unix socket.
   */
  processIndex: number;
  /** Exit when stdin closes (set by `serve` in `process` mode for the key servers it starts). */
  exitWithParent: boolean;
  /** KEYCELL_KEYSERVER_AUDIT_LOG: a file to append one JSON line per TCP/TLS request to, or `-` for standard output. */
  auditLog?: string;
}

/**
 * Reads the key server's own settings. A TCP listener on an address other than loopback must
 * use TLS with client certificates: without them it would sign for anyone who can reach it.
 *
 * @example
 * ```ts
 * const ks = loadKeyserverConfig((name) => Deno.env.get(name));
 * ```
 */
export function loadKeyserverConfig(env: Settings): KeyserverConfig {
  const s = parse(env);
  const listen = s.KEYCELL_KEYSERVER_LISTEN ?? "127.0.0.1:2407";
  const tcp = listen === "off" ? undefined : splitHostPort(listen);
  const tlsCert = s.KEYCELL_KEYSERVER_TLS_CERT;
  const tlsKey = s.KEYCELL_KEYSERVER_TLS_KEY;
  const clientCa = s.KEYCELL_KEYSERVER_CLIENT_CA;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new Error("KEYCELL_KEYSERVER_TLS_CERT and KEYCELL_KEYSERVER_TLS_KEY must be set together");
  }
  if (clientCa !== undefined && tlsCert === undefined) {
    throw new Error("KEYCELL_KEYSERVER_CLIENT_CA needs KEYCELL_KEYSERVER_TLS_CERT and KEYCELL_KEYSERVER_TLS_KEY");
  }
  const loopback = tcp === undefined || /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(tcp.hostname);
  if (!loopback && clientCa === undefined) {
    throw new Error(
      `KEYCELL_KEYSERVER_LISTEN=${listen} is not loopback: set KEYCELL_KEYSERVER_TLS_CERT, KEYCELL_KEYSERVER_TLS_KEY and KEYCELL_KEYSERVER_CLIENT_CA`,
    );
  }
  return {
    tcp,
    tlsCert,
    tlsKey,
    clientCa,
    maxPendingPerConnection: s.KEYCELL_KEYSERVER_MAX_PENDING ?? 1024,
    maxConnections: s.KEYCELL_KEYSERVER_MAX_CONNECTIONS ?? 4096,
    maxQueueWaitMs: s.KEYCELL_KEYSERVER_MAX_QUEUE_WAIT_MS ?? DEFAULT_MAX_WAIT_MS,
    metrics: s.KEYCELL_KEYSERVER_METRICS_LISTEN === undefined || s.KEYCELL_KEYSERVER_METRICS_LISTEN === "off"
      ? undefined
      : splitHostPort(s.KEYCELL_KEYSERVER_METRICS_LISTEN),
    auditLog: s.KEYCELL_KEYSERVER_AUDIT_LOG,
    processes: s.KEYCELL_KEYSERVER_PROCESSES ?? 1,
    processIndex: Number(env("KEYCELL_KEYSERVER_PROCESS") ?? 0),
    exitWithParent: env("KEYCELL_KEYSERVER_EXIT_WITH_PARENT") === "1",
  };
}

