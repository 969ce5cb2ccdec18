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
  signer: "worker" | "inline";
  /** Guest instances in `worker` mode; one per core unless KEYCELL_SIGNER_INSTANCES says otherwise. */
  signerInstances: number;
  maxBodyBytes: number;
  maxInFlight: number;
  /** The guest module. */
  wasmPath: string;
  /** KEYCELL_FAULT_INJECTION=1 adds the trap route the recovery tests use. */
  faultInjection: boolean;
}

const SIGNER_MODES = ["worker", "inline"] as const;

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
  return {
    dataDir,
    keysDir: env("KEYCELL_KEYS_DIR") || `${dataDir}/keys`,
    hostname: match[1].replace(/^\[|\]$/g, ""),
    port: Number(match[2]),
    signer: signer as Config["signer"],
    signerInstances: positiveInt(env, "KEYCELL_SIGNER_INSTANCES", navigator.hardwareConcurrency),
    maxBodyBytes: positiveInt(env, "KEYCELL_MAX_BODY_BYTES", 64 * 1024),
    maxInFlight: positiveInt(env, "KEYCELL_MAX_IN_FLIGHT", 256),
    wasmPath: env("KEYCELL_WASM") || new URL("../../wasm/signer.wasm", import.meta.url).pathname,
    faultInjection: env("KEYCELL_FAULT_INJECTION") === "1",
  };
}

function positiveInt(env: (name: string) => string | undefined, name: string, fallback: number): number {
  const text = env(name);
  if (!text) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(text)}`);
  return value;
}
