/**
 * The one interface every face of keycell signs through: the HTTP app, the Keyless server and
 * the key server's RPC call a {@linkcode KeyService}, and every deployment supplies one (the
 * sealed-key service over a store and a guest transport, or a client of a key server in
 * another process).
 *
 * @module
 */

import { KeycellError } from "./errors.ts";
import type { KeyNameRecord, KeyPage, ListOptions } from "./key_store.ts";
import type { KeyInfo, SignRequest, VerifyRequest } from "./signer_client.ts";
import type { KeySpec } from "./algorithms.ts";

export type { KeyState, KeyVersion, ListOptions } from "./key_store.ts";
export { KEY_STATES } from "./key_store.ts";

/**
 * A name a key may be given: letters, digits, `.`, `_` and `-`, starting with a letter or digit,
 * at most 128 characters, and never 64 hex digits (those are key ids).
 */
export const KEY_NAME_PATTERN = /^(?![0-9a-fA-F]{64}$)[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Most labels a key carries. */
export const MAX_LABELS = 32;
/** A label's name: lowercase letters, digits, `.`, `_` and `-`, at most 63 characters. */
export const LABEL_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** Longest label value. */
export const MAX_LABEL_VALUE = 256;
/** Longest description. */
export const MAX_DESCRIPTION = 1024;
/** Most versions a name keeps (its record stays small enough for every store). */
export const MAX_VERSIONS = 100;
/** Days a scheduled deletion waits, as AWS KMS's ScheduleKeyDeletion allows: 7 to 30, 30 unless said. */
export const PENDING_WINDOW_DAYS = { min: 7, max: 30, default: 30 } as const;

/** What a key is made with, besides its spec: all optional; without a name, its id names it. */
export interface KeyMetadata {
  name?: string;
  description?: string;
  labels?: Record<string, string>;
}

/**
 * Checks metadata against the limits above; throws `bad_request` naming what is wrong.
 *
 * @example
 * ```ts
 * import { checkKeyMetadata } from "./key_service.ts";
 *
 * checkKeyMetadata({ name: "web", labels: { team: "edge" } }); // fine
 * ```
 */
export function checkKeyMetadata(metadata: KeyMetadata): void {
  const { name, description, labels } = metadata;
  if (name !== undefined && (typeof name !== "string" || !KEY_NAME_PATTERN.test(name))) {
    throw new KeycellError("bad_request", "name: letters, digits, '.', '_' and '-', at most 128, not 64 hex digits (an id)");
  }
  if (description !== undefined && (typeof description !== "string" || description.length > MAX_DESCRIPTION)) {
    throw new KeycellError("bad_request", `description: a string of at most ${MAX_DESCRIPTION} characters`);
  }
  if (labels === undefined) return;
  const entries = typeof labels === "object" && labels !== null && !Array.isArray(labels) ? Object.entries(labels) : undefined;
  if (entries === undefined || entries.length > MAX_LABELS) throw new KeycellError("bad_request", `labels: an object of at most ${MAX_LABELS} entries`);
  for (const [k, v] of entries) {
    if (!LABEL_NAME_PATTERN.test(k)) throw new KeycellError("bad_request", `labels: ${JSON.stringify(k)} is not a label name`);
    if (typeof v !== "string" || v.length > MAX_LABEL_VALUE) {
      throw new KeycellError("bad_request", `labels.${k}: a string of at most ${MAX_LABEL_VALUE} characters`);
    }
  }
}

/** A change to a named key ({@linkcode KeyService.changeKey}). */
export type KeyChange =
  | { action: "rotate" }
  | { action: "disable" }
  | { action: "enable" }
  | { action: "schedule_deletion"; pendingWindowDays?: number }
  | { action: "cancel_deletion" };

/** One of {@linkcode KeyChange}'s actions. */
export type KeyAction = KeyChange["action"];

/**
 * A named key: the public parts of the key a reference stands for (a version's own id: that
 * version; a name: its primary), its name's versions, state and metadata.
 */
export interface KeyDetails extends KeyInfo, Omit<KeyNameRecord, "name"> {
  name: string;
}

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
  /**
   * A key made inside the guest and stored sealed, under `metadata.name` or else its id. Rejects
   * with `key_name_taken` when a key has that name.
   */
  generate(keySpec: KeySpec, metadata?: KeyMetadata): Promise<KeyInfo>;
  /** A key wrapped to {@linkcode KeyService.wrappingKey}, unwrapped only inside the guest. */
  importWrapped(keySpec: KeySpec, wrapped: Uint8Array, metadata?: KeyMetadata): Promise<KeyInfo>;
  /**
   * The named key `ref` names: a name, or a key id (which stands for the name its key is a
   * version of). Rejects with `key_not_found` when there is none.
   */
  describeKey(ref: string): Promise<KeyDetails>;
  /**
   * The id of the key that signs (`use` "sign") or verifies (`use` "read") for `ref`: a key id
   * stands for itself (and is checked when it signs), a name for its primary version. For
   * signing, a disabled key rejects with `key_disabled`, one pending deletion with
   * `key_pending_deletion`.
   */
  resolveKey(ref: string, use: "sign" | "read"): Promise<string>;
  /**
   * Rotates a named key (a new version made in the guest with the same spec becomes primary;
   * every older one stays), disables or enables it, or schedules or cancels its deletion.
   * Resolves with the key as it is after the change.
   */
  changeKey(ref: string, change: KeyChange): Promise<KeyDetails>;
  /** The public half of the guest's RSA-4096 wrapping key. */
  wrappingKey(): Promise<{ id: string; spki: Uint8Array }>;
  /**
   * The named key `ref` names, every version of it, leaves the store (and the JWKS set) at once,
   * and every guest that held one zeroes it.
   */
  deleteKey(ref: string): Promise<void>;
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
  /** Whether a signature is valid under a public key, checked by BoringSSL in the guest. */
  verify(request: VerifyRequest): Promise<boolean>;
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
