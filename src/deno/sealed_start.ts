/**
 * Starting the sealed-key service on Deno: the master key file beside the store, checked against
 * the store before a single request is served.
 *
 * @module
 */

import { META, type KeyStore } from "../core/key_store.ts";
import { toHex, type KeyFileReport } from "../core/protocol.ts";
import { SealedSigner } from "../core/sealed_keys.ts";
import type { Transport } from "../core/signer_client.ts";
import type { StartOptions } from "../guest/inline.ts";
import { type SignerMode, startSigner } from "./signer.ts";
import type { Engine } from "./config.ts";

/** What {@linkcode startSealedSigner} needs. */
export interface SealedStartOptions {
  mode: Exclude<SignerMode, "process">;
  wasm: Uint8Array;
  /** A module for RSA keys beside `wasm` for EC keys ({@linkcode StartOptions.rsaWasm}). */
  rsaWasm?: Uint8Array;
  store: KeyStore;
  /** The master key file, normally `<dataDir>/master.key`. */
  masterKeyPath: string;
  /** Guest instances in `worker` mode. */
  instances?: number;
  /** The engine the guests run in (KEYCELL_ENGINE); `v8` by default. */
  engine?: Engine;
  /** In `worker` mode, also a guest in this isolate for requests that come alone (see pool.ts). */
  inlineWhen?: (workersIdle: boolean) => boolean;
  cacheBytes?: number;
  /** An opt-in directory of plaintext key files to import into the store. */
  importKeysDir?: string;
  storeTimeoutMs?: number;
  recheckMs?: number;
  /** How often keys whose scheduled deletion is due are deleted (also at start, and on use). Default an hour. */
  sweepMs?: number;
}

/** Default of {@linkcode SealedStartOptions.sweepMs}: deletion dates are days away, so hourly is soon enough. */
const SWEEP_MS = 3_600_000;

/**
 * Starts the signer with its master key and checks the key against the store: a missing master
 * key file while the store holds sealed keys, or a master key other than the one the store's
 * keys were sealed under, stops startup. It never makes a new master key over existing keys.
 *
 * @example
 * ```ts
 * import type { KeyStore } from "../core/key_store.ts";
 * import { startSealedSigner } from "./sealed_start.ts";
 *
 * async function start(wasm: Uint8Array, store: KeyStore) {
 *   const { signer } = await startSealedSigner({ mode: "worker", wasm, store, masterKeyPath: ".keycell/master.key" });
 *   return signer;
 * }
 * ```
 */
export async function startSealedSigner(
  options: SealedStartOptions,
): Promise<{ signer: SealedSigner; transport: Transport; keyFiles: readonly KeyFileReport[]; createdMasterKey: boolean }> {
  const { store, masterKeyPath } = options;
  const next = nextMasterKeyPath(masterKeyPath);
  if (fileExists(next)) {
    // Some blobs may be sealed under the new key already: finish the rotation before serving.
    throw new Error(`a master key rotation is unfinished (${next} exists); run rotate-master-key again to finish it`);
  }
  const recordedId = await store.getMeta(META.MASTER_KEY_ID);
  const exists = fileExists(masterKeyPath);
  const count = exists ? 0 : await store.count();
  if (!exists && (recordedId !== undefined || count > 0)) {
    throw new Error(
      `the master key ${masterKeyPath} is missing, but the ${store.kind} key store holds ${count} keys sealed under ` +
        `master key ${recordedId ? toHex(recordedId) : "(unrecorded)"}; restore that file (a new master key could not open them)`,
    );
  }
  const start: StartOptions = { wasm: options.wasm, rsaWasm: options.rsaWasm, masterKeyPath, cacheBytes: options.cacheBytes };
  if (!exists) {
    // One guest makes the master key before the others start, so they all read the same file.
    const { client } = await startSigner(options.mode, { ...start, createMasterKey: true }, { instances: 1, engine: options.engine });
    await client.close();
  }
  const { client, keyFiles } = await startSigner(options.mode, { ...start, keysDir: options.importKeysDir }, {
    instances: options.instances,
    inlineWhen: options.inlineWhen,
    engine: options.engine,
  });
  const signer = new SealedSigner(client, store, { storeTimeoutMs: options.storeTimeoutMs, recheckMs: options.recheckMs });
  try {
    const id = await signer.masterKeyId();
    const recorded = await store.setMetaOnce(META.MASTER_KEY_ID, Uint8Array.fromHex(id));
    if (recorded.length === 64) {
      throw new Error(
        `a master key rotation of the ${store.kind} key store is under way (from ${toHex(recorded.subarray(0, 32))} ` +
          `to ${toHex(recorded.subarray(32))}); start this node when it has finished, with the new master key`,
      );
    }
    const stored = toHex(recorded);
    if (stored !== id) {
      throw new Error(
        `the master key ${masterKeyPath} (id ${id}) is not the one the ${store.kind} key store's keys are sealed under ` +
          `(id ${stored}); start with the right master key file`,
      );
    }
    if (options.importKeysDir !== undefined) await signer.importKeyFiles(keyFiles);
    signer.startSweeping(options.sweepMs ?? SWEEP_MS);
  } catch (err) {
    await client.close();
    throw err;
  }
  return { signer, transport: client.transport, keyFiles, createdMasterKey: !exists };
}

/**
 * Where a master key rotation keeps the new key until it is done; while it exists, no signer starts.
 *
 * @example
 * ```ts
 * import { nextMasterKeyPath } from "./sealed_start.ts";
 *
 * nextMasterKeyPath(".keycell/master.key"); // ".keycell/master.key.next"
 * ```
 */
export function nextMasterKeyPath(masterKeyPath: string): string {
  return `${masterKeyPath}.next`;
}

/**
 * Whether a file exists; throws what `stat` throws but NotFound.
 *
 * @example
 * ```ts
 * import { fileExists } from "./sealed_start.ts";
 *
 * fileExists(new URL(import.meta.url).pathname); // true
 * fileExists("/nonexistent/master.key"); // false
 * ```
 */
export function fileExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
