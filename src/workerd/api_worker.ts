/**
 * The `keycell-api` Worker: the same Hono app as `serve`, the only Worker with a socket. It holds
 * no guest and no key bytes: signing goes to the `keycell-signer` Worker over the `SIGNER` service
 * binding, sealed blobs and public keys live in the `KEYS` Durable Object (SQLite), and the tokens
 * (hashes and scopes, the `tokens.json` form) come from the `TOKENS` binding.
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { DurableObject } from "cloudflare:workers";
import { createApp } from "../host/app.ts";
import { TokenStore } from "../host/auth.ts";
import { parseTokensFile } from "../host/tokens_file.ts";
import { KeycellError } from "../core/errors.ts";
import type { KeylessNames } from "../core/key_names.ts";
import { type KeyNameRecord, type KeyPage, type KeyStore, META, type StoredKey } from "../core/key_store.ts";
import { toHex } from "../core/protocol.ts";
import { type SealedKeys, SealedSigner } from "../core/sealed_keys.ts";
import type { KeyMetadata } from "../core/key_service.ts";
import { ProtocolSignerClient, type SignerClient } from "../core/signer_client.ts";
import { DurableKeyStore, type KeyStoreNamespace, type RpcListOptions } from "./durable_key_store.ts";
import { type SignerBinding, ServiceTransport } from "./service_transport.ts";
import { type DurableObjectSqlStorage, durableObjectKeyStore } from "./sql_store.ts";
import type { SqlKeyStore } from "../core/sql_key_store.ts";
import { getLog } from "../core/log.ts";
import { configureWorkerLogging, type LogEnv } from "./log.ts";

const log = getLog();

/** The api Worker's bindings. */
export interface ApiEnv extends LogEnv {
  SIGNER: SignerBinding;
  KEYS: KeyStoreNamespace;
  /** `{"tokens": [...]}`, as in `tokens.json` (hashes and scopes). */
  TOKENS?: string;
  /** Largest request body, in bytes (KEYCELL_MAX_BODY_BYTES). */
  MAX_BODY_BYTES?: string;
  /** Signer calls in flight at once (KEYCELL_MAX_IN_FLIGHT). */
  MAX_IN_FLIGHT?: string;
  /** "1" adds the trap route the recovery tests use. */
  FAULT_INJECTION?: string;
}

/** The Durable Object holding the key store. */
export class KeyStoreObject extends DurableObject {
  readonly #store: SqlKeyStore;

  constructor(ctx: { storage: DurableObjectSqlStorage }, env: unknown) {
    super(ctx, env);
    this.#store = durableObjectKeyStore(ctx.storage);
  }

  // RPC answers prototype methods only, so each is spelt out.
  put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return this.#store.put(key, sealedUnder);
  }
  putMany(keys: StoredKey[]): Promise<void> {
    return this.#store.putMany(keys);
  }
  get(id: string): Promise<StoredKey | undefined> {
    return this.#store.get(id);
  }
  delete(id: string): Promise<boolean> {
    return this.#store.delete(id);
  }
  findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined> {
    return this.#store.findByKeylessName(by);
  }
  list({ ids, ...options }: RpcListOptions): Promise<KeyPage> {
    return this.#store.list(ids === undefined ? options : { ...options, ids: new Set(ids) });
  }
  count(): Promise<number> {
    return this.#store.count();
  }
  getMeta(name: string): Promise<Uint8Array | undefined> {
    return this.#store.getMeta(name);
  }
  setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array> {
    return this.#store.setMetaOnce(name, value, sealedUnder);
  }
  replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return this.#store.replaceSealed(id, from, to);
  }
  replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return this.#store.replaceMeta(name, from, to);
  }
  getName(name: string): Promise<KeyNameRecord | undefined> {
    return this.#store.getName(name);
  }
  writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return this.#store.writeName(from, to, key, sealedUnder);
  }
  deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean> {
    return this.#store.deleteName(name, from, ids);
  }
  dueDeletions(now: number): Promise<string[]> {
    return this.#store.dueDeletions(now);
  }
}

/**
 * The sealed-key service of the request being served. A SealedSigner shares promises between the
 * requests that use it (a store check, the wrapping key), and on workerd a promise or I/O object
 * belongs to the request that made it: one cancelled request would leave the others waiting on a
 * promise that never settles. So each request gets its own, over the same stateless transport and
 * store; it checks the store before every signature (a key deleted anywhere never signs again).
 */
const perRequest = new AsyncLocalStorage<SealedSigner>();

function current(): SealedSigner {
  const signer = perRequest.getStore();
  if (signer === undefined) throw new KeycellError("internal", "no sealed-key service outside a request");
  return signer;
}

/** The app's signer: whichever {@linkcode SealedSigner} the current request has. */
const signer: SignerClient & SealedKeys = {
  mode: "service",
  listKeys: () => current().listKeys(),
  getKey: (id) => current().getKey(id),
  sign: (request) => current().sign(request),
  verify: (request) => current().verify(request),
  generate: (keySpec, metadata?: KeyMetadata) => current().generate(keySpec, metadata),
  describeKey: (ref) => current().describeKey(ref),
  resolveKey: (ref, use) => current().resolveKey(ref, use),
  changeKey: (ref, change) => current().changeKey(ref, change),
  deleteKey: (id) => current().deleteKey(id),
  health: () => current().health(),
  injectTrap: () => current().injectTrap(),
  close: () => Promise.resolve(),
  listPage: (options) => current().listPage(options),
  wrappingKey: () => current().wrappingKey(),
  importWrapped: (keySpec, wrapped, metadata) => current().importWrapped(keySpec, wrapped, metadata),
  jwksKeyIds: () => current().jwksKeyIds(),
  setJwks: (id, on) => current().setJwks(id, on),
};

let app: ReturnType<typeof createApp> | undefined;
let checked = false;

/** A positive integer from a binding, or the default. */
function positive(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value && Number.isSafeInteger(n) && n > 0 ? n : fallback;
}

function tokensOf(env: ApiEnv): TokenStore {
  if (env.TOKENS === undefined) throw new Error("the TOKENS binding is missing");
  return TokenStore.fromEntries(parseTokensFile(env.TOKENS, "the TOKENS binding"));
}

/**
 * The app, made on the first request (bindings arrive with requests). No request is served until
 * the guest's master key is the one the store's keys are sealed under.
 */
async function ready(env: ApiEnv, sealed: SealedSigner, store: KeyStore): Promise<ReturnType<typeof createApp>> {
  app ??= createApp({
    signer,
    keys: signer,
    tokens: tokensOf(env),
    maxBodyBytes: positive(env.MAX_BODY_BYTES, 64 * 1024),
    maxInFlight: positive(env.MAX_IN_FLIGHT, 256),
    faultInjection: env.FAULT_INJECTION === "1",
  });
  if (!checked) {
    const id = await sealed.masterKeyId();
    const recorded = await store.setMetaOnce(META.MASTER_KEY_ID, Uint8Array.fromHex(id));
    if (recorded.length === 64) {
      log.error(
        `a master key rotation of the key store is under way (from ${toHex(recorded.subarray(0, 32))} to ` +
          `${toHex(recorded.subarray(32))}); requests are refused until it has finished and the signer has the new master key`,
      );
      throw new KeycellError("signer_unavailable", "the signer is not available");
    }
    const stored = toHex(recorded);
    if (stored !== id) {
      log.error(`the signer's master key (id ${id}) is not the one the store's keys are sealed under (id ${stored})`);
      throw new KeycellError("signer_unavailable", "the signer is not available");
    }
    checked = true;
    // A Worker keeps no timers between requests: due deletions are swept once an instance starts, and found on use.
    await sealed.sweepDeletions().catch((err) => console.error(`keycell: the deletion sweep failed: ${(err as Error).message}`));
  }
  return app;
}

export default {
  async fetch(request: Request, env: ApiEnv, ctx: unknown): Promise<Response> {
    configureWorkerLogging(env);
    const store = new DurableKeyStore(env.KEYS);
    const sealed = new SealedSigner(new ProtocolSignerClient(new ServiceTransport(env.SIGNER)), store, { recheckMs: 0 });
    let served: ReturnType<typeof createApp>;
    try {
      served = await ready(env, sealed, store);
    } catch (err) {
      const error = err instanceof KeycellError ? err : new KeycellError("signer_unavailable", "the signer is not available");
      if (!(err instanceof KeycellError)) log.error(`cannot start: ${(err as Error).message}`);
      return Response.json(error.toJSON(), { status: error.status });
    }
    return await perRequest.run(sealed, () => served.fetch(request, env, ctx as never));
  },
};
