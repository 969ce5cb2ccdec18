/**
 * The JWKS set: which keys `GET /.well-known/jwks.json` publishes. It is one metadata entry of the
 * key store ({@linkcode META.JWKS}), so it persists with the keys and every node sharing the
 * store publishes the same set. Each change reads the entry and writes it back only if it still
 * holds what was read ({@linkcode KeyStore.replaceMeta}), so two nodes marking keys at once both
 * get their mark in.
 *
 * @module
 */

import { KeycellError } from "./errors.ts";
import { type KeyStore, META } from "./key_store.ts";
import { KEY_ID_BYTES, KEY_ID_PATTERN, toHex } from "./protocol.ts";

/** The most keys the set holds: a JWKS is fetched by every verifier, and a handful of keys is usual. */
export const MAX_JWKS_KEYS = 100;

/** The entry's format byte. */
const FORMAT = 1;

/** Compare-and-set attempts before a change gives up (only when other writers keep winning). */
const MAX_ATTEMPTS = 32;

/**
 * The entry's bytes for a set of key ids: the format byte, then the ids sorted, each once.
 *
 * @example
 * ```ts
 * import { decodeJwksSet, encodeJwksSet } from "./jwks_set.ts";
 *
 * const bytes = encodeJwksSet(["cd".repeat(32), "ab".repeat(32)]); // 1 + 2 * 32 bytes
 * decodeJwksSet(bytes); // ["abab…", "cdcd…"]
 * ```
 */
export function encodeJwksSet(ids: readonly string[]): Uint8Array {
  const sorted = [...new Set(ids)].sort();
  const out = new Uint8Array(1 + sorted.length * KEY_ID_BYTES);
  out[0] = FORMAT;
  sorted.forEach((id, i) => {
    if (!KEY_ID_PATTERN.test(id)) throw new KeycellError("key_not_found", "no key with that id");
    out.subarray(1 + i * KEY_ID_BYTES, 1 + (i + 1) * KEY_ID_BYTES).setFromHex(id);
  });
  return out;
}

/**
 * The key ids in the entry's bytes ({@linkcode encodeJwksSet}); throws `internal` on bytes it did
 * not write.
 *
 * @example
 * ```ts
 * import { decodeJwksSet } from "./jwks_set.ts";
 *
 * decodeJwksSet(Uint8Array.of(1)); // []
 * ```
 */
export function decodeJwksSet(bytes: Uint8Array): string[] {
  if (bytes[0] !== FORMAT || (bytes.length - 1) % KEY_ID_BYTES !== 0) {
    throw new KeycellError("internal", "the key store's JWKS set is malformed");
  }
  const ids: string[] = [];
  for (let at = 1; at < bytes.length; at += KEY_ID_BYTES) ids.push(toHex(bytes.subarray(at, at + KEY_ID_BYTES)));
  return ids;
}

/**
 * The ids of the keys in the store's JWKS set, sorted (empty when none was ever marked).
 *
 * @example
 * ```ts
 * import type { KeyStore } from "./key_store.ts";
 * import { jwksKeyIds } from "./jwks_set.ts";
 *
 * declare const store: KeyStore;
 * const published = await jwksKeyIds(store);
 * ```
 */
export async function jwksKeyIds(store: KeyStore): Promise<string[]> {
  const bytes = await store.getMeta(META.JWKS);
  return bytes === undefined ? [] : decodeJwksSet(bytes);
}

/**
 * Puts a key id into the store's JWKS set (`on`) or takes it out; resolves whether the set
 * changed. A set of {@linkcode MAX_JWKS_KEYS} keys takes no more (`bad_request`). The caller checks
 * that the key exists: the set holds ids only.
 *
 * @example
 * ```ts
 * import type { KeyStore } from "./key_store.ts";
 * import { markJwks } from "./jwks_set.ts";
 *
 * declare const store: KeyStore;
 * await markJwks(store, "ab".repeat(32), true); // true: it is published now
 * await markJwks(store, "ab".repeat(32), true); // false: it already was
 * ```
 */
export async function markJwks(store: KeyStore, id: string, on: boolean): Promise<boolean> {
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    // After a lost race, a random pause (growing with each loss) lets the writers spread out.
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, Math.random() * 2 * attempt));
    const current = await store.getMeta(META.JWKS);
    const ids = current === undefined ? [] : decodeJwksSet(current);
    if (ids.includes(id) === on) return false;
    if (on && ids.length >= MAX_JWKS_KEYS) {
      throw new KeycellError("bad_request", `the JWKS holds at most ${MAX_JWKS_KEYS} keys; take one out first`);
    }
    const next = encodeJwksSet(on ? [...ids, id] : ids.filter((other) => other !== id));
    if (current === undefined) {
      // Unset: the first writer's value is stored; anyone else's answer is then the other value.
      const stored = await store.setMetaOnce(META.JWKS, next);
      if (stored.length === next.length && stored.every((b, i) => b === next[i])) return true;
    } else if (await store.replaceMeta(META.JWKS, current, next)) {
      return true;
    }
  }
  throw new KeycellError("signer_unavailable", "the JWKS set kept changing while this change was made; retry");
}
