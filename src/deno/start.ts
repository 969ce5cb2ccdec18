/**
 * Start-up shared by `serve` and `keyserver`: the audit log, and the sealed-key service over the
 * configured store with its guests, each reported in one line and, when it cannot start, one line
 * and exit 1 (no stack trace for a missing master key, an unreachable store or an unwritable log).
 *
 * @module
 */

import { AuditLog } from "./audit_log.ts";
import type { Config } from "./config.ts";
import type { Metrics } from "../host/metrics.ts";
import type { KeyStore } from "../core/key_store.ts";
import type { SealedSigner } from "../core/sealed_keys.ts";
import type { KeyFileReport } from "../core/protocol.ts";
import { type ChosenGuest, chooseEngineGuest } from "./guest.ts";
import { startSealedSigner } from "./sealed_start.ts";
import { openKeyStore } from "./store/open.ts";
import type { Log } from "../core/log.ts";

/** Logs `cannot start: <why>` and exits 1. */
function cannotStart(log: Log, why: string): never {
  log.error(`cannot start: ${why}`);
  Deno.exit(1);
}

/**
 * Opens the audit log at `path` (none when `undefined`), or stops the start.
 *
 * @example
 * ```ts
 * import { openAuditLog } from "./start.ts";
 * import { getLog } from "../core/log.ts";
 *
 * const audit = openAuditLog(undefined, getLog()); // no audit log configured
 * audit === undefined; // true
 * ```
 */
export function openAuditLog<R extends object>(path: string | undefined, log: Log, metrics?: Metrics): AuditLog<R> | undefined {
  if (path === undefined) return undefined;
  try {
    return AuditLog.open<R>(path, metrics);
  } catch (err) {
    cannotStart(log, `cannot open the audit log ${path}: ${(err as Error).message}`);
  }
}

/** What {@linkcode startKeyService} started. */
export interface StartedKeyService {
  service: SealedSigner;
  /** The store the service keeps its sealed keys in. */
  store: KeyStore;
  keyFiles: readonly KeyFileReport[];
  /** Guests running: one in `inline` mode, else KEYCELL_SIGNER_INSTANCES. */
  instances: number;
  /** The guest module they run (KEYCELL_GUEST, KEYCELL_WASM), named for the ready line. */
  guest: ChosenGuest;
}

/**
 * Chooses the guest module (KEYCELL_GUEST: `wide` refuses to start without a wide guest that
 * passes its self-test), opens the store, starts the guests with the master key (made on a first
 * start) and imports the opt-in key directory, logging what it did to `log`; or stops the start.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * import { startKeyService } from "./start.ts";
 * import { getLog } from "../core/log.ts";
 *
 * async function start() {
 *   const config = loadConfig((name) => Deno.env.get(name));
 *   const { service } = await startKeyService(config, getLog());
 *   return service;
 * }
 * ```
 */
export async function startKeyService(
  config: Config,
  log: Log,
  { inlineWhen }: { inlineWhen?: (workersIdle: boolean) => boolean } = {},
): Promise<StartedKeyService> {
  let guest: ChosenGuest;
  try {
    guest = await chooseEngineGuest(config);
  } catch (err) {
    cannotStart(log, (err as Error).message);
  }
  const store = await openKeyStore(config).catch((err) => cannotStart(log, `cannot open the key store: ${(err as Error).message}`));
  const inline = config.signer === "inline";
  const instances = inline ? 1 : config.signerInstances;
  const started = await startSealedSigner({
    mode: inline ? "inline" : "worker",
    wasm: guest.wasm,
    rsaWasm: guest.rsaWasm,
    store,
    masterKeyPath: `${config.dataDir}/master.key`,
    instances,
    inlineWhen,
    engine: config.engine,
    cacheBytes: config.keyCacheBytes,
    recheckMs: config.keyRecheckMs,
    importKeysDir: config.importKeysDir,
  }).catch((err) => cannotStart(log, (err as Error).message));
  if (started.createdMasterKey) {
    const file = `${config.dataDir}/master.key`;
    log.info(`created the master key ${file}; back it up, sealed keys open only with it`, { file });
  }
  reportKeyFiles(started.keyFiles, log);
  return { service: started.signer, store, keyFiles: started.keyFiles, instances, guest };
}

/**
 * Logs one line for each file of the opt-in key directory: imported, or skipped and why (a warning).
 *
 * @example
 * ```ts
 * import { reportKeyFiles } from "./start.ts";
 * import { getLog } from "../core/log.ts";
 *
 * reportKeyFiles([{ file: "old.pem", error: "not a supported private key" }], getLog());
 * // keycell: skipped old.pem: not a supported private key
 * ```
 */
export function reportKeyFiles(keyFiles: readonly KeyFileReport[], log: Log): void {
  for (const f of keyFiles) {
    if (f.error) log.warn(`skipped ${f.file}: ${f.error}`, { file: f.file });
    else log.info(`imported ${f.file} as ${f.keySpec} ${f.id}`, { file: f.file, keySpec: f.keySpec, id: f.id });
  }
}
