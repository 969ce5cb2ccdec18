/**
 * For tests and the fuzz task: a {@linkcode KeyFinder} over a fixed set of public keys, such as
 * the keys of a test's key directory, and a key service over a bare guest. Production key
 * servers find keys through the key store and sign through the sealed-key service.
 *
 * @module
 */

import type { KeyFinder } from "./key_finder.ts";
import { certificateDigestName, keyNames, skiName } from "../core/key_names.ts";
import { KeycellError } from "../core/errors.ts";
import type { KeyService } from "../core/key_service.ts";
import { pageOf } from "../core/key_store.ts";
import { ProtocolSignerClient } from "../core/signer_client.ts";

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

/**
 * For tests: a {@linkcode KeyService} over a bare guest's message function, with no key store:
 * it signs, names and lists the keys the guest holds (from a key directory, say), so tests can
 * count and gate the guest calls a key server makes. Production key servers serve the sealed-key
 * service.
 *
 * @example
 * ```ts
 * import { guestService } from "./_test_keys.ts";
 *
 * // `handle` is a compartment's: `(request) => compartment.handle(request)`.
 * async function keyCount(handle: (request: Uint8Array) => Uint8Array): Promise<number> {
 *   const service = guestService(handle);
 *   return (await service.listPage({ limit: 100 })).keys.length;
 * }
 * ```
 */
export function guestService(handle: (request: Uint8Array) => Uint8Array | Promise<Uint8Array>): KeyService {
  const client = new ProtocolSignerClient({ mode: "guest", request: async (r) => await handle(r), close: () => Promise.resolve() });
  const noStore = () => Promise.reject(new KeycellError("bad_request", "this key service has no key store"));
  return {
    mode: client.mode,
    listPage: async (options) => {
      const keys = (await client.listKeys()).filter((k) => (options.ids?.has(k.id) ?? true) && (options.cursor === undefined || k.id > options.cursor));
      return pageOf(keys.sort((a, b) => a.id < b.id ? -1 : 1), options.limit);
    },
    getKey: (id) => client.getKey(id),
    generate: (keySpec) => client.generate(keySpec),
    importWrapped: noStore,
    wrappingKey: noStore,
    describeKey: noStore,
    resolveKey: (ref) => Promise.resolve(ref),
    changeKey: noStore,
    deleteKey: (id) => client.deleteKey(id),
    jwksKeyIds: noStore,
    setJwks: noStore,
    sign: (request) => client.sign(request),
    verify: (request) => client.verify(request),
    health: () => client.health(),
    injectTrap: () => client.injectTrap(),
    close: () => client.close(),
  };
}
