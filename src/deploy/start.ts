/**
 * Start-up of keycell on Deno Deploy (and `deno serve` anywhere): settings from environment
 * variables (Deploy has no data directory), the sealed keys on Deno KV, the guest in a Worker where
 * the runtime has Workers and inline otherwise, its master key from a secret environment variable,
 * checked against the store before a single request is served.
 *
 * @module
 */

import { createApp } from "../host/app.ts";
import { TokenStore } from "../host/auth.ts";
import { parseTokensFile } from "../host/tokens_file.ts";
import { META } from "../core/key_store.ts";
import { toHex } from "../core/protocol.ts";
import { SealedSigner } from "../core/sealed_keys.ts";
import type { ProtocolSignerClient } from "../core/signer_client.ts";
import { startSigner } from "../deno/signer.ts";
import { KvKeyStore } from "./kv_store.ts";
import { getLog } from "../core/log.ts";

const log = getLog();

/** The environment variable holding the master key: base64 (or hex) of its 32 bytes. */
export const MASTER_KEY_ENV = "KEYCELL_MASTER_KEY";
/** The environment variable holding the tokens, as the text of a `tokens.json`. */
export const TOKENS_ENV = "KEYCELL_TOKENS";

/** What {@linkcode startDeploy} reads: an environment variable's value, or `undefined`. */
export type Env = {
  get(name: string): string | undefined;
  /** Whether a variable is set, without reading it (the master key is read by the guest's side only). */
  has(name: string): boolean;
};

/** What {@linkcode startDeploy} started. */
export interface Started {
  app: ReturnType<typeof createApp>;
  service: SealedSigner;
  store: KvKeyStore;
  /** `worker` or `inline`: where the guest runs. */
  signer: string;
  /** Stops the guest and closes the store. */
  close(): Promise<void>;
}

/** A start-up refusal: one line, no stack trace. */
export class CannotStart extends Error {}

/**
 * Opens the store, starts the guest with the master key from {@linkcode MASTER_KEY_ENV} and checks
 * it against the store, and makes the app; throws {@linkcode CannotStart} with one line saying what
 * to do when it cannot.
 *
 * @example
 * ```ts
 * import { startDeploy } from "./start.ts";
 *
 * const wasm = Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url));
 * const started = await startDeploy(Deno.env, wasm);
 * Deno.serve(started.app.fetch);
 * ```
 */
export async function startDeploy(env: Env, wasm: Uint8Array): Promise<Started> {
  const tokensText = env.get(TOKENS_ENV);
  if (tokensText === undefined || tokensText.trim() === "") {
    throw new CannotStart(
      `${TOKENS_ENV} is not set: set it to the text of a tokens.json (./keycell tokens create admin writes one in .keycell/tokens.json and prints the token)`,
    );
  }
  let tokens: TokenStore;
  try {
    tokens = TokenStore.fromEntries(parseTokensFile(tokensText, TOKENS_ENV));
  } catch (err) {
    throw new CannotStart((err as Error).message);
  }
  const limits = {
    maxBodyBytes: integer(env, "KEYCELL_MAX_BODY_BYTES", 1, 64 * 1024),
    maxInFlight: integer(env, "KEYCELL_MAX_IN_FLIGHT", 1, 256),
    cacheBytes: integer(env, "KEYCELL_KEY_CACHE_BYTES", 1, 64 * 1024 * 1024),
    recheckMs: integer(env, "KEYCELL_KEY_RECHECK_MS", 0, 5_000),
  };
  const chosen = env.get("KEYCELL_SIGNER");
  if (chosen !== undefined && chosen !== "worker" && chosen !== "inline") throw new CannotStart(`KEYCELL_SIGNER must be worker or inline, not ${chosen}`);

  let store: KvKeyStore;
  try {
    store = await KvKeyStore.open(env.get("KEYCELL_KV_PATH"));
  } catch (err) {
    throw new CannotStart(`cannot open the Deno KV key store: ${(err as Error).message}`);
  }
  try {
    // Only whether it is set: the value is read by the guest's side alone (the Worker, in `worker` mode).
    if (!env.has(MASTER_KEY_ENV)) {
      const [recorded, count] = [await store.getMeta(META.MASTER_KEY_ID), await store.count()];
      if (recorded !== undefined || count > 0) {
        throw new CannotStart(
          `${MASTER_KEY_ENV} is not set, but the ${store.kind} key store holds ${count} keys sealed under master key ` +
            `${recorded ? toHex(recorded) : "(unrecorded)"}; set it to that key (a new master key could not open them)`,
        );
      }
      throw new CannotStart(
        `${MASTER_KEY_ENV} is not set: make a master key with \`deno task deploy:master-key\` (the guest makes it and prints it ` +
          `in base64) and keep it as a secret environment variable`,
      );
    }
    const { client, signer } = await startGuest(chosen, wasm, limits.cacheBytes);
    const service = new SealedSigner(client, store, { recheckMs: limits.recheckMs });
    try {
      await checkMasterKey(service, store);
    } catch (err) {
      await client.close();
      throw err;
    }
    // Deletion dates are days away: a sweep an hour (and one now, and on use) is soon enough.
    service.startSweeping(3_600_000);
    const app = createApp({ signer: service, keys: service, tokens, maxBodyBytes: limits.maxBodyBytes, maxInFlight: limits.maxInFlight });
    return { app, service, store, signer, close: async () => (service.stopSweeping(), await client.close(), await store.close()) };
  } catch (err) {
    await store.close();
    throw err;
  }
}

/**
 * The guest: in a Worker unless the runtime has none (or `KEYCELL_SIGNER=inline`); a Worker the
 * runtime cannot start, when none was asked for, leaves the guest inline, and says so.
 */
async function startGuest(chosen: string | undefined, wasm: Uint8Array, cacheBytes: number): Promise<{ client: ProtocolSignerClient; signer: string }> {
  const options = { wasm, masterKeyEnv: MASTER_KEY_ENV, cacheBytes };
  const worker = chosen === "worker" || (chosen === undefined && typeof Worker === "function");
  if (worker) {
    try {
      return { client: (await startSigner("worker", options, { instances: 1 })).client, signer: "worker" };
    } catch (err) {
      // A Worker that ran and could not start its guest (a missing or malformed master key, say)
      // would fail inline too, and inline the app's isolate would read the master key: stop here.
      const ran = (err as Error).message.startsWith("the signer worker did not start:");
      if (chosen === "worker" || ran) throw new CannotStart((err as Error).message);
      log.warn(`the signer Worker did not start (${(err as Error).message}); the guest runs inline instead`);
    }
  }
  try {
    return { client: (await startSigner("inline", options)).client, signer: "inline" };
  } catch (err) {
    throw new CannotStart(`the signer did not start: ${(err as Error).message}`);
  }
}

/** No request is served until the guest's master key is the one the store's keys are sealed under. */
async function checkMasterKey(service: SealedSigner, store: KvKeyStore): Promise<void> {
  const id = await service.masterKeyId();
  const recorded = await store.setMetaOnce(META.MASTER_KEY_ID, Uint8Array.fromHex(id));
  if (recorded.length === 64) {
    throw new CannotStart(
      `a master key rotation of the ${store.kind} key store is under way (from ${toHex(recorded.subarray(0, 32))} ` +
        `to ${toHex(recorded.subarray(32))}); start when it has finished, with the new master key`,
    );
  }
  if (toHex(recorded) !== id) {
    throw new CannotStart(
      `the master key ${MASTER_KEY_ENV} (id ${id}) is not the one the ${store.kind} key store's keys are sealed under ` +
        `(id ${toHex(recorded)}); set it to the right master key`,
    );
  }
}

/** An integer setting at least `min`, or `fallback` when unset. */
function integer(env: Env, name: string, min: number, fallback: number): number {
  const text = env.get(name);
  if (text === undefined || text === "") return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new CannotStart(`${name} must be an integer of at least ${min}, not ${JSON.stringify(text)}`);
  return n;
}
