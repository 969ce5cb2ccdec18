/**
 * The `keycell-api` Worker: the same Hono app as `serve`, the only Worker with a socket. It holds
 * no guest and no key bytes: signing goes to the `keycell-signer` Worker over the `SIGNER` service
 * binding, sealed blobs and public keys live in the `KEYS` Durable Object (SQLite), and the tokens
 * (hashes and scopes, the `tokens.json` form) come from the `TOKENS` binding.
 *
 * @module
 */

import { DurableObject } from "cloudflare:workers";
import { createApp } from "../host/app.ts";
import { TokenStore } from "../host/auth.ts";
import { KeycellError } from "../core/errors.ts";
import type { KeylessNames } from "../core/key_names.ts";
import { type KeyPage, META, type StoredKey } from "../core/key_store.ts";
import { toHex } from "../core/protocol.ts";
import { SealedSigner } from "../core/sealed_keys.ts";
import { ProtocolSignerClient } from "../core/signer_client.ts";
import { DurableKeyStore, type KeyStoreNamespace } from "./durable_key_store.ts";
import { type SignerBinding, ServiceTransport } from "./service_transport.ts";
import { SqlKeyStore, type SqlStorage } from "./sql_store.ts";

/** The api Worker's bindings. */
export interface ApiEnv {
  SIGNER: SignerBinding;
  KEYS: KeyStoreNamespace;
  /** `{"tokens": [...]}`, as in `tokens.json`. */
  TOKENS: string;
  /** "1" adds the trap route the recovery tests use. */
  FAULT_INJECTION?: string;
}

/** The Durable Object holding the key store. */
export class KeyStoreObject extends DurableObject {
  readonly #store: SqlKeyStore;

  constructor(ctx: { storage: { sql: SqlStorage; transactionSync<T>(work: () => T): T } }, env: unknown) {
    super(ctx, env);
    this.#store = new SqlKeyStore(ctx.storage.sql, (work) => ctx.storage.transactionSync(work));
  }

  // RPC answers prototype methods only, so each is spelt out.
  put(key: StoredKey): Promise<boolean> {
    return this.#store.put(key);
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
  list(options: { limit: number; cursor?: string }): Promise<KeyPage> {
    return this.#store.list(options);
  }
  count(): Promise<number> {
    return this.#store.count();
  }
  getMeta(name: string): Promise<Uint8Array | undefined> {
    return this.#store.getMeta(name);
  }
  setMetaOnce(name: string, value: Uint8Array): Promise<Uint8Array> {
    return this.#store.setMetaOnce(name, value);
  }
  replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return this.#store.replaceSealed(id, from, to);
  }
  replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return this.#store.replaceMeta(name, from, to);
  }
}

let app: ReturnType<typeof createApp> | undefined;
let signer: SealedSigner | undefined;
let checked = false;

/**
 * The app, made on the first request (bindings arrive with requests). No request is served until
 * the guest's master key is the one the store's keys are sealed under.
 */
async function ready(env: ApiEnv): Promise<ReturnType<typeof createApp>> {
  if (app === undefined || signer === undefined) {
    const store = new DurableKeyStore(env.KEYS);
    signer = new SealedSigner(new ProtocolSignerClient(new ServiceTransport(env.SIGNER)), store);
    const tokens = TokenStore.fromEntries(JSON.parse(env.TOKENS).tokens);
    app = createApp({ signer, keys: signer, tokens, faultInjection: env.FAULT_INJECTION === "1" });
  }
  if (!checked) {
    const id = await signer.masterKeyId();
    const stored = toHex(await new DurableKeyStore(env.KEYS).setMetaOnce(META.MASTER_KEY_ID, Uint8Array.fromHex(id)));
    if (stored !== id) {
      console.error(`keycell: the signer's master key (id ${id}) is not the one the store's keys are sealed under (id ${stored})`);
      throw new KeycellError("signer_unavailable", "the signer is not available");
    }
    checked = true;
  }
  return app;
}

export default {
  async fetch(request: Request, env: ApiEnv, ctx: unknown): Promise<Response> {
    let served: ReturnType<typeof createApp>;
    try {
      served = await ready(env);
    } catch (err) {
      const error = err instanceof KeycellError ? err : new KeycellError("signer_unavailable", "the signer is not available");
      if (!(err instanceof KeycellError)) console.error(`keycell: cannot start: ${(err as Error).message}`);
      return Response.json(error.toJSON(), { status: error.status });
    }
    return await served.fetch(request, env, ctx as never);
  },
};
