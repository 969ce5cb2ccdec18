/**
 * For tests and the fuzz task: a {@linkcode KeyFinder} over a fixed set of public keys, such as
 * the keys of a test's key directory. Production key servers find keys through the key store.
 *
 * @module
 */

import type { KeyFinder } from "./key_finder.ts";
import { certificateDigestName, keyNames, skiName } from "../core/key_names.ts";

/**
 * Finds the given keys by SKI and (RSA) certificate digest.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync } from "node:crypto";
 * import { keyFinderFor } from "./_test_keys.ts";
 * import { keylessNames } from "../core/key_names.ts";
 *
 * const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
 * const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
 * const finder = keyFinderFor([{ id: "test-key", spki }]);
 * await finder.findKey({ ski: keylessNames(spki)!.ski }); // "test-key"
 * ```
 */
export function keyFinderFor(keys: readonly { id: string; spki: Uint8Array }[]): KeyFinder {
  const index = new Map<string, string>();
  for (const { id, spki } of keys) for (const name of keyNames(spki)) index.set(name, id);
  return {
    findKey: (by) => Promise.resolve(index.get(by.ski ? skiName(by.ski) : certificateDigestName(by.certificateDigest!))),
  };
}
