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
import { type ChosenGuest, chooseGuest } from "./guest.ts";
import { startSealedSigner } from "./sealed_start.ts";
import { openKeyStore } from "./store/open.ts";

/** Prints `<who>: cannot start: <why>` and exits 1. */
function cannotStart(who: string, why: string): never {
  console.error(`${who}: cannot start: ${why}`);
  Deno.exit(1);
}

/**
 * Opens the audit log at `path` (none when `undefined`), or stops the start.
 *
 * @example
 * ```ts
 * import { openAuditLog } from "./start.ts";
 *
 * const audit = openAuditLog(undefined, "keycell"); // no audit log configured
 * audit === undefined; // true
 * ```
 */
export function openAuditLog<R extends object>(path: string | undefined, who: string, metrics?: Metrics): AuditLog<R> | undefined {
  if (path === undefined) return undefined;
  try {
    return AuditLog.open<R>(path, metrics);
  } catch (err) {
    cannotStart(who, `cannot open the audit log ${path}: ${(err as Error).message}`);
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
 * start) and imports the opt-in key directory, printing what it did; or stops the start.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * import { startKeyService } from "./start.ts";
 *
 * async function start() {
 *   const config = loadConfig((name) => Deno.env.get(name));
 *   const { service } = await startKeyService(config, "keycell");
 *   return service;
 * }
 * ```
 */
export async function startKeyService(
  config: Config,
  who: string,
  { inlineWhen }: { inlineWhen?: () => boolean } = {},
): Promise<StartedKeyService> {
  let guest: ChosenGuest;
  try {
    guest = chooseGuest(config);
  } catch (err) {
    cannotStart(who, (err as Error).message);
  }
  const store = await openKeyStore(config).catch((err) => cannotStart(who, `cannot open the key store: ${(err as Error).message}`));
  const inline = config.signer === "inline";
  const instances = inline ? 1 : config.signerInstances;
  const started = await startSealedSigner({
    mode: inline ? "inline" : "worker",
    wasm: guest.wasm,
    store,
    masterKeyPath: `${config.dataDir}/master.key`,
    instances,
    inlineWhen,
    cacheBytes: config.keyCacheBytes,
    recheckMs: config.keyRecheckMs,
    importKeysDir: config.importKeysDir,
  }).catch((err) => cannotStart(who, (err as Error).message));
  if (started.createdMasterKey) {
    console.log(`${who}: created the master key ${config.dataDir}/master.key; back it up, sealed keys open only with it`);
  }
  reportKeyFiles(started.keyFiles, who);
  return { service: started.signer, store, keyFiles: started.keyFiles, instances, guest };
}

/**
 * Prints one line for each file of the opt-in key directory: imported, or skipped and why.
 *
 * @example
 * ```ts
 * import { reportKeyFiles } from "./start.ts";
 *
 * reportKeyFiles([{ file: "old.pem", error: "not a supported private key" }], "keycell");
 * // keycell: skipped old.pem: not a supported private key
 * ```
 */
export function reportKeyFiles(keyFiles: readonly KeyFileReport[], who: string): void {
  for (const f of keyFiles) {
    console.log(f.error ? `${who}: skipped ${f.file}: ${f.error}` : `${who}: imported ${f.file} as ${f.keySpec} ${f.id}`);
  }
}
