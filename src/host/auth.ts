/**
 * Bearer-token authentication with per-token key scopes.
 *
 * Only SHA-256 hashes of tokens are kept. A presented token is hashed and compared with every
 * configured hash in constant time, so neither a match's position nor its prefix shows in timing.
 *
 * @module
 */

import { hash } from "node:crypto";
import { KeycellError } from "../core/errors.ts";
import { type RateLimit, TokenBucket } from "./rate.ts";

/** What a token may do. */
export interface Grant {
  /** The token's name, for logs and metrics. */
  name: string;
  /** Key ids the token may use, or `"*"` for every key. */
  keys: "*" | ReadonlySet<string>;
  /** The token's request allowance, when `tokens.json` gives it one. */
  rate?: TokenBucket;
}

/** One configured token, as stored in `tokens.json`. */
export interface TokenEntry {
  name: string;
  /** Lowercase hex SHA-256 of the token's UTF-8 bytes. */
  sha256: string;
  keys: "*" | string[];
  /** Optional: at most this many requests per second (with a burst) for this token. */
  rate?: RateLimit;
}

interface HashedGrant extends Grant {
  /** Lowercase hex, as `tokens.json` gives it. */
  sha256: string;
}

/**
 * The two refusals of a request without a valid token, made once (as the in-flight limit's is):
 * an error made per request captures a stack each time, about 2 µs in a loop, and requests with
 * bad tokens are the cheapest flood to send.
 */
const NO_TOKEN = new KeycellError("unauthorized", "a bearer token is required");
const INVALID_TOKEN = new KeycellError("unauthorized", "the bearer token is not valid");

/**
 * The set of tokens the server accepts.
 *
 * @example
 * ```ts
 * const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex("s3cret"), keys: "*" }]);
 * const grant = tokens.authenticate("Bearer s3cret"); // { name: "admin", keys: "*" }
 * ```
 */
export class TokenStore {
  #grants: HashedGrant[];

  private constructor(grants: HashedGrant[]) {
    this.#grants = grants;
  }

  /** Builds a store from configured entries; throws on a malformed entry. */
  static fromEntries(entries: readonly TokenEntry[]): TokenStore {
    return new TokenStore(entries.map((entry) => {
      const where = `token ${JSON.stringify(entry.name)}`;
      if (!/^[0-9a-f]{64}$/.test(entry.sha256)) throw new Error(`${where}: sha256 must be 64 lowercase hex digits`);
      let rate: TokenBucket | undefined;
      try {
        if (entry.rate !== undefined) rate = new TokenBucket(entry.rate);
      } catch (err) {
        throw new Error(`${where}: rate: ${(err as Error).message}`);
      }
      return {
        name: entry.name,
        keys: entry.keys === "*" ? "*" : new Set(entry.keys),
        rate,
        sha256: entry.sha256,
      };
    }));
  }

  /**
   * Takes `other`'s tokens in place of these, for a reload while serving: requests already
   * authenticated keep their grant, later ones see only the new tokens. Rates start afresh.
   */
  replace(other: TokenStore): void {
    this.#grants = other.#grants;
  }

  /** How many tokens are configured. */
  get size(): number {
    return this.#grants.length;
  }

  /**
   * Checks an `Authorization` header value. Throws `unauthorized` when it is missing,
   * malformed or matches no token.
   */
  authenticate(header: string | undefined): Grant {
    const match = /^Bearer ([\x21-\x7e]{1,512})$/.exec(header ?? "");
    if (match === null) throw NO_TOKEN;
    const presented = sha256Hex(match[1]);
    let found: HashedGrant | undefined;
    for (const grant of this.#grants) {
      if (constantTimeEqual(presented, grant.sha256) && found === undefined) found = grant;
    }
    if (found === undefined) throw INVALID_TOKEN;
    return found.rate === undefined ? { name: found.name, keys: found.keys } : { name: found.name, keys: found.keys, rate: found.rate };
  }
}

/**
 * Counts a request against its token's rate; throws `rate_limited`, with when to retry, when the
 * token is over it.
 *
 * @example
 * ```ts
 * const tokens = TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex("s3cret"), keys: "*" }]);
 * admit(tokens.authenticate("Bearer s3cret"));
 * ```
 */
export function admit(grant: Grant): void {
  const wait = grant.rate?.take() ?? 0;
  if (wait > 0) {
    throw new KeycellError("rate_limited", `this token is over its request rate; retry in ${Math.ceil(wait)} s`, wait);
  }
}

/**
 * Whether a grant covers a key.
 *
 * @example
 * ```ts
 * mayUse({ name: "a", keys: "*" }, "ab".repeat(32)); // true
 * ```
 */
export function mayUse(grant: Grant, keyId: string): boolean {
  return grant.keys === "*" || grant.keys.has(keyId);
}

/**
 * Lowercase hex SHA-256 of a token, the form `tokens.json` stores.
 *
 * @example
 * ```ts
 * sha256Hex("s3cret");
 * ```
 */
export function sha256Hex(token: string): string {
  // Synchronous and native: WebCrypto's digest is an async op whose thread hop cost more than the
  // rest of a request's authentication put together. Hex rather than bytes: a Node Buffer made
  // for each request cost more than the hash itself.
  return hash("sha256", token, "hex");
}

/**
 * Makes a new random token: 32 bytes from the CSPRNG, base64url without padding.
 *
 * @example
 * ```ts
 * const token = newToken(); // 43 characters
 * ```
 */
export function newToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Compares two hex digests in time that depends on their lengths only. */
function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length && i < b.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
