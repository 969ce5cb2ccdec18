/**
 * How the key server finds the key an operation names: one narrow interface, implemented in
 * production by the sealed key store's index of SKIs and certificate digests.
 *
 * @module
 */

import { ErrorCode } from "./codec.ts";
import type { KeylessNames } from "../core/key_names.ts";
import type { Operation } from "./operation.ts";

/** Finds keycell keys by their Keyless names. */
export interface KeyFinder {
  /**
   * The id of the key with this SKI, or else this certificate digest; `undefined` when no key has
   * the name. Rejects only when it cannot answer (a store that is down): a transient failure.
   */
  findKey(by: Partial<KeylessNames>): Promise<string | undefined>;
}

const SKI_BYTES = 20;
const CERTIFICATE_DIGEST_BYTES = 32;
const MAX_SNI_BYTES = 253;
const SNI_PATTERN = /^[A-Za-z0-9*_-]+(\.[A-Za-z0-9*_-]+)*\.?$/;

/**
 * The id of the key an operation names (by SKI, then by certificate digest), or the error code to
 * answer: FORMAT for a name of the wrong length, KEY_NOT_FOUND when nothing matches, INTERNAL when
 * the finder could not answer (transient, so never "not found").
 *
 * @example
 * ```ts
 * import { findKeyFor, type KeyFinder } from "./key_finder.ts";
 * import { ErrorCode } from "./codec.ts";
 *
 * const ski = new Uint8Array(20).fill(0xab);
 * const finder: KeyFinder = { findKey: (by) => Promise.resolve(by.ski?.[0] === 0xab ? "key-1" : undefined) };
 * await findKeyFor(finder, { id: 1, ski }); // "key-1"
 * await findKeyFor(finder, { id: 2, ski: new Uint8Array(3) }) === ErrorCode.FORMAT; // true: an SKI is 20 bytes
 * ```
 */
export async function findKeyFor(finder: KeyFinder, op: Operation): Promise<string | ErrorCode> {
  const { ski, certificateDigest: digest } = op;
  if (ski !== undefined && ski.length !== SKI_BYTES) return ErrorCode.FORMAT;
  if (digest !== undefined && digest.length !== CERTIFICATE_DIGEST_BYTES) return ErrorCode.FORMAT;
  if (ski === undefined && digest === undefined) {
    // keycell selects keys by SKI or digest only. An SNI alone names no key; one that is no
    // host name at all (a URL path, longer than a DNS name) is a format error, never internal.
    if (op.sni !== undefined && !validSni(op.sni)) return ErrorCode.FORMAT;
    return ErrorCode.KEY_NOT_FOUND;
  }
  try {
    const id = (ski && await finder.findKey({ ski })) || (digest && await finder.findKey({ certificateDigest: digest }));
    return id || ErrorCode.KEY_NOT_FOUND;
  } catch {
    return ErrorCode.INTERNAL;
  }
}

function validSni(sni: Uint8Array): boolean {
  if (sni.length === 0 || sni.length > MAX_SNI_BYTES) return false;
  return SNI_PATTERN.test(new TextDecoder().decode(sni));
}
