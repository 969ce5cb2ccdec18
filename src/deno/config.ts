/**
 * Server configuration from the environment, with the defaults a first run needs.
 *
 * @module
 */

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
  /** The 32-bit guest module (wasm/signer.wasm), or KEYCELL_WASM, which replaces the choice of guest. */
  wasmPath: string;
  /** Whether KEYCELL_WASM named the module: then it is used as it is, whatever KEYCELL_GUEST says. */
  wasmOverridden: boolean;
  /**
   * KEYCELL_GUEST: `auto` (the default) runs the wide guest (wasm/signer-wide.wasm, 64-bit limbs,
   * wasm wide arithmetic) when the engine runs it and it passes its self-test, else the 32-bit
   * one; `wide` runs the wide guest or refuses to start; `baseline` runs the 32-bit guest.
   */
  guest: GuestChoice;
  /** The wide guest module. */
  wideWasmPath: string;
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
   * KEYCELL_DRAIN_MS, default 10000: on SIGTERM or SIGINT, how long requests in flight may take to
   * finish; then the server stops whatever clients are still doing.
   */
  drainMs: number;
  /**
   * KEYCELL_REUSE_PORT=1: listen with SO_REUSEPORT, so a new `serve` can start on the same address
   * before this one drains (a zero-downtime upgrade). Off by default, so a second server started
   * by mistake fails with "address in use".
   */
  reusePort: boolean;
}

const SIGNER_MODES = ["worker", "inline", "process"] as const;
const GUEST_CHOICES = ["auto", "wide", "baseline"] as const;
/** What KEYCELL_GUEST may say. */
export type GuestChoice = typeof GUEST_CHOICES[number];

/**
 * Reads the configuration; throws an Error naming the variable when a value is unusable.
 *
 * @example
 * ```ts
 * const config = loadConfig((name) => Deno.env.get(name));
 * ```
 */
export function loadConfig(env: (name: string) => string | undefined): Config {
  const dataDir = env("KEYCELL_DATA_DIR") || ".keycell";
  const listen = env("KEYCELL_LISTEN") || "127.0.0.1:8787";
  const match = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(listen);
  if (match === null || Number(match[2]) > 65535) {
    throw new Error(`KEYCELL_LISTEN must be host:port, not ${JSON.stringify(listen)}`);
  }
  const signer = env("KEYCELL_SIGNER") || "worker";
  if (!(SIGNER_MODES as readonly string[]).includes(signer)) {
    throw new Error(`KEYCELL_SIGNER must be one of ${SIGNER_MODES.join(", ")}, not ${JSON.stringify(signer)}`);
  }
  const guest = env("KEYCELL_GUEST") || "auto";
  if (!(GUEST_CHOICES as readonly string[]).includes(guest)) {
    throw new Error(`KEYCELL_GUEST must be one of ${GUEST_CHOICES.join(", ")}, not ${JSON.stringify(guest)}`);
  }
  return {
    dataDir,
    keysDir: env("KEYCELL_KEYS_DIR") || `${dataDir}/keys`,
    hostname: match[1].replace(/^\[|\]$/g, ""),
    port: Number(match[2]),
    signer: signer as Config["signer"],
    keyserverSocket: env("KEYCELL_KEYSERVER_SOCKET") || `${dataDir}/keyserver.sock`,
    signerInstances: positiveInt(env, "KEYCELL_SIGNER_INSTANCES", navigator.hardwareConcurrency),
    maxBodyBytes: positiveInt(env, "KEYCELL_MAX_BODY_BYTES", 64 * 1024),
    maxInFlight: positiveInt(env, "KEYCELL_MAX_IN_FLIGHT", 256),
    wasmPath: env("KEYCELL_WASM") || new URL("../../wasm/signer.wasm", import.meta.url).pathname,
    wasmOverridden: Boolean(env("KEYCELL_WASM")),
    guest: guest as GuestChoice,
    wideWasmPath: new URL("../../wasm/signer-wide.wasm", import.meta.url).pathname,
    faultInjection: env("KEYCELL_FAULT_INJECTION") === "1",
    importKeysDir: env("KEYCELL_KEYS_DIR") || undefined,
    store: keyStore(env),
    postgresUrl: env("KEYCELL_POSTGRES_URL") || undefined,
    keyCacheBytes: positiveInt(env, "KEYCELL_KEY_CACHE_BYTES", 64 * 1024 * 1024),
    keyRecheckMs: positiveInt(env, "KEYCELL_KEY_RECHECK_MS", 5_000, { zero: true }),
    auditLog: env("KEYCELL_AUDIT_LOG") || undefined,
    drainMs: positiveInt(env, "KEYCELL_DRAIN_MS", 10_000, { zero: true }),
    reusePort: flag(env, "KEYCELL_REUSE_PORT"),
  };
}

function flag(env: (name: string) => string | undefined, name: string): boolean {
  const text = env(name);
  if (!text || text === "0") return false;
  if (text === "1") return true;
  throw new Error(`${name} must be 1 or 0, not ${JSON.stringify(text)}`);
}

function keyStore(env: (name: string) => string | undefined): Config["store"] {
  const store = env("KEYCELL_STORE") || "sqlite";
  if (store !== "sqlite" && store !== "postgres") throw new Error(`KEYCELL_STORE must be sqlite or postgres, not ${JSON.stringify(store)}`);
  if (store === "postgres" && !env("KEYCELL_POSTGRES_URL")) throw new Error("KEYCELL_STORE=postgres needs KEYCELL_POSTGRES_URL");
  return store;
}

function positiveInt(
  env: (name: string) => string | undefined,
  name: string,
  fallback: number,
  { zero = false }: { zero?: boolean } = {},
): number {
  const text = env(name);
  if (!text) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < (zero ? 0 : 1)) {
    throw new Error(`${name} must be a ${zero ? "non-negative" : "positive"} integer, not ${JSON.stringify(text)}`);
  }
  return value;
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
  /** Exit when stdin closes (set by the `process` transport for the key servers it starts). */
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
export function loadKeyserverConfig(env: (name: string) => string | undefined): KeyserverConfig {
  const listen = env("KEYCELL_KEYSERVER_LISTEN") || "127.0.0.1:2407";
  let tcp: KeyserverConfig["tcp"];
  if (listen !== "off") {
    const match = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(listen);
    if (match === null || Number(match[2]) > 65535) {
      throw new Error(`KEYCELL_KEYSERVER_LISTEN must be host:port or off, not ${JSON.stringify(listen)}`);
    }
    tcp = { hostname: match[1].replace(/^\[|\]$/g, ""), port: Number(match[2]) };
  }
  const tlsCert = env("KEYCELL_KEYSERVER_TLS_CERT") || undefined;
  const tlsKey = env("KEYCELL_KEYSERVER_TLS_KEY") || undefined;
  const clientCa = env("KEYCELL_KEYSERVER_CLIENT_CA") || undefined;
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
    maxPendingPerConnection: positiveInt(env, "KEYCELL_KEYSERVER_MAX_PENDING", 1024),
    auditLog: env("KEYCELL_KEYSERVER_AUDIT_LOG") || undefined,
    exitWithParent: env("KEYCELL_KEYSERVER_EXIT_WITH_PARENT") === "1",
  };
}
