/**
 * The key mix of bench/keys: mostly P-256, as at the edge; RSA keys are few (and slow to make in
 * the guest). A fixed interleaving, so any prefix of the store has the same mix.
 *
 * @module
 */

import type { KeySpec } from "../../src/core/protocol.ts";

/** Each spec's share of the keys. */
export const MIX: [KeySpec, number][] = [["ECC_NIST_P256", 0.97], ["ECC_NIST_P384", 0.02], ["RSA_2048", 0.01]];

/**
 * The spec of the i-th key.
 *
 * @example
 * ```ts
 * specAt(0); // "ECC_NIST_P256"
 * ```
 */
export function specAt(i: number): KeySpec {
  const r = ((i * 2654435761) >>> 0) / 2 ** 32;
  let acc = 0;
  for (const [spec, share] of MIX) if (r < (acc += share)) return spec;
  return "ECC_NIST_P256";
}
