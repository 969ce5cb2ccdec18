/**
 * The one interface every face of keycell signs through: the HTTP app, the Keyless server and
 * the key server's RPC call a {@linkcode KeyService}, and every deployment supplies one (the
 * sealed-key service over a store and a guest transport, or a client of a key server in
 * another process).
 *
 * @module
 */

import type { KeycellError } from "./errors.ts";
import type { KeyPage, ListOptions } from "./key_store.ts";
import type { KeyInfo, SignRequest } from "./signer_client.ts";
import type { KeySpec } from "./algorithms.ts";

export type { ListOptions } from "./key_store.ts";

/**
 * Keys a caller may list, make, import, delete, publish in the JWKS and sign with. Every method rejects with a
 * {@linkcode KeycellError}; none ever returns private key material.
 *
 * @example
 * ```ts
 * import type { KeyService } from "./key_service.ts";
 *
 * async function signHello(keys: KeyService, keyId: string): Promise<Uint8Array> {
 *   const message = new TextEncoder().encode("hello");
 *   return await keys.sign({ keyId, algorithm: "ECDSA_SHA_256", messageType: "RAW", message });
 * }
 * ```
 */
export interface KeyService {
  /** Which signer serves it: `inline`, `worker` or `process`. */
  readonly mode: string;
  /** One page of keys in id order. */
  listPage(options: ListOptions): Promise<KeyPage>;
  /** Rejects with `key_not_found` when there is no such key. */
  getKey(id: string): Promise<KeyInfo>;
  /** A key made inside the guest and stored sealed. */
  generate(keySpec: KeySpec): Promise<KeyInfo>;
  /** A key wrapped to {@linkcode KeyService.wrappingKey}, unwrapped only inside the guest. */
  importWrapped(keySpec: KeySpec, wrapped: Uint8Array): Promise<KeyInfo>;
  /** The public half of the guest's RSA-4096 wrapping key. */
  wrappingKey(): Promise<{ id: string; spki: Uint8Array }>;
  /** The key leaves the store (and the JWKS set) and every guest that held it zeroes it. */
  deleteKey(id: string): Promise<void>;
  /**
   * The ids in the JWKS set (the keys `/.well-known/jwks.json` publishes), sorted; an id may
   * outlive its key (the caller skips those).
   */
  jwksKeyIds(): Promise<string[]>;
  /**
   * Puts a stored key into the JWKS set (`on`) or takes it out. Rejects with `key_not_found` for
   * a key the store does not hold (taking its id out of the set all the same).
   */
  setJwks(id: string, on: boolean): Promise<void>;
  /** The signature. */
  sign(request: SignRequest): Promise<Uint8Array>;
  /** Resolves when the guest and the store answer. */
  health(): Promise<void>;
  /** Makes the guest trap, for fault-injection tests; resolves with the error the request got. */
  injectTrap(): Promise<KeycellError>;
  close(): Promise<void>;
}

/**
 * Every key of a service, page by page: for small key sets (callers of large ones page through
 * {@linkcode KeyService.listPage} themselves).
 *
 * @example
 * ```ts
 * import { listAllKeys, type KeyService } from "./key_service.ts";
 *
 * async function keyIds(service: KeyService): Promise<string[]> {
 *   return (await listAllKeys(service)).map((key) => key.id);
 * }
 * ```
 */
export async function listAllKeys(service: Pick<KeyService, "listPage">): Promise<KeyInfo[]> {
  const keys: KeyInfo[] = [];
  let cursor: string | undefined;
  do {
    const page = await service.listPage({ limit: 1000, cursor });
    keys.push(...page.keys);
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return keys;
}
