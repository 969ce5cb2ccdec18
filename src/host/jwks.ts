/**
 * The JWK Set `GET /.well-known/jwks.json` publishes: the public keys of the keys in the store's
 * JWKS set (src/core/jwks_set.ts), as JWKs.
 *
 * The route needs no token and faces the internet, so the document is built at most once per
 * `ttlMs` (one read of the set and one per key), shared by every request meanwhile, and rebuilt at
 * once after this node changes the set. Another node's change shows here within `ttlMs`. While the
 * store cannot answer, the last document built is served.
 *
 * @module
 */

import { KeycellError } from "../core/errors.ts";
import { MAX_JWKS_KEYS } from "../core/jwks_set.ts";
import type { SealedKeys } from "../core/sealed_keys.ts";
import type { SignerClient } from "../core/signer_client.ts";
import { type PublicJwk, publicJwk } from "./jose.ts";
import { getLog } from "../core/log.ts";

const log = getLog();

/** A JWK Set document. */
export interface JwkSet {
  keys: PublicJwk[];
}

/** How long a built document is served before the set is read again. */
const DEFAULT_TTL_MS = 10_000;

/**
 * Builds, caches and changes the published JWK Set. Without a key store (`keys` undefined: keys
 * from files only) the set is empty and cannot be changed.
 *
 * @example
 * ```ts
 * import type { SealedKeys } from "../core/sealed_keys.ts";
 * import type { SignerClient } from "../core/signer_client.ts";
 * import { JwksPublisher } from "./jwks.ts";
 *
 * declare const signer: SignerClient;
 * declare const keys: SealedKeys;
 * const jwks = new JwksPublisher(signer, keys);
 * await jwks.mark("ab".repeat(32), true);
 * const { keys: published } = await jwks.document();
 * ```
 */
export class JwksPublisher {
  readonly #signer: SignerClient;
  readonly #keys?: SealedKeys;
  readonly #ttlMs: number;
  #cached?: { at: number; document: JwkSet };
  #building?: Promise<JwkSet>;
  /** Bumped by every change made here, so a build that overlapped one is not cached. */
  #generation = 0;

  constructor(signer: SignerClient, keys: SealedKeys | undefined, options: { ttlMs?: number } = {}) {
    this.#signer = signer;
    this.#keys = keys;
    this.#ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
  }

  /** Whether there is a key store to keep the set in. */
  get available(): boolean {
    return this.#keys !== undefined;
  }

  /** The JWK Set, in key id order; keys deleted since they were marked are left out. */
  async document(): Promise<JwkSet> {
    if (this.#keys === undefined) return { keys: [] };
    const cached = this.#cached;
    if (cached !== undefined && performance.now() - cached.at < this.#ttlMs) return cached.document;
    const building = this.#building ??= this.#build(this.#keys).finally(() => {
      if (this.#building === building) this.#building = undefined;
    });
    try {
      return await building;
    } catch (err) {
      if (cached === undefined) throw err;
      log.warn(`serving the previous JWKS; cannot build it anew: ${(err as Error).message}`);
      return cached.document;
    }
  }

  /**
   * Refuses early (400) what {@linkcode mark} would refuse for a key not yet made: no key store,
   * or a full set.
   */
  async checkRoom(): Promise<void> {
    const keys = this.#need();
    if ((await keys.jwksKeyIds()).length >= MAX_JWKS_KEYS) throw full();
  }

  /** Puts a key into the published set (`on`) or takes it out; `key_not_found` for an unknown key. */
  async mark(id: string, on: boolean): Promise<void> {
    const keys = this.#need();
    if (on) {
      const ids = await keys.jwksKeyIds();
      if (ids.length >= MAX_JWKS_KEYS && !ids.includes(id)) throw full();
    }
    try {
      await keys.setJwks(id, on);
    } finally {
      this.forget();
    }
  }

  /** Drops the cached document, so the next request reads the set again (after a key is deleted, say). */
  forget(): void {
    this.#generation++;
    this.#cached = undefined;
    this.#building = undefined;
  }

  #need(): SealedKeys {
    if (this.#keys === undefined) {
      throw new KeycellError("bad_request", "this server has no key store (keys from files only), so it publishes no JWKS");
    }
    return this.#keys;
  }

  async #build(keys: SealedKeys): Promise<JwkSet> {
    const generation = this.#generation;
    const jwks: PublicJwk[] = [];
    for (const id of await keys.jwksKeyIds()) {
      try {
        jwks.push(publicJwk(await this.#signer.getKey(id)));
      } catch (err) {
        if (!(err instanceof KeycellError && err.code === "key_not_found")) throw err;
      }
    }
    const document = { keys: jwks };
    if (generation === this.#generation) this.#cached = { at: performance.now(), document };
    return document;
  }
}

function full(): KeycellError {
  return new KeycellError("bad_request", `the JWKS holds at most ${MAX_JWKS_KEYS} keys; take one out first`);
}
