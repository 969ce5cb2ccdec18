/**
 * The message-level signer protocol: request bytes in, response bytes out.
 *
 * Every transport (inline, worker, a workerd service binding) carries these bytes unchanged to
 * the signer compartment, which is the only code that talks to the guest. Nothing here touches the guest
 * instance; the codes mirror `rust-signer/ABI.md`.
 *
 * Request: `op (1) || body`. Response: `status (1) || body`, status 0 on success.
 *
 * @module
 */

import { ALGORITHM_CODES, type AlgorithmName, KEY_SPEC_CODES, type KeySpec } from "./algorithms.ts";
// Re-exported: the guest protocol carries these codes, and most of its users need both.
export { ALGORITHM_CODES, type AlgorithmName, KEY_SPEC_CODES, type KeySpec } from "./algorithms.ts";
import { type ErrorCode, KeycellError, KeylessError } from "./errors.ts";

/** Operations the compartment understands. */
export const Op = {
  GENERATE: 2,
  PUBLIC_KEY: 3,
  SIGN: 4,
  DROP: 5,
  LIST: 6,
  HEALTH: 7,
  TRAP: 8,
  /** `id (32) || sealed blob`: open a sealed key inside the guest and cache it. */
  UNSEAL: 9,
  /** `spec || wrapping key id (32) || sealed wrapping key length (u32 LE) || sealed wrapping key || wrapped key`. */
  IMPORT: 10,
  /** The guest's key cache counters (ABI.md, kc_stats). */
  STATS: 11,
  /** The master key's 32-byte id, answered by the compartment. */
  MASTER_KEY_ID: 12,
  /**
   * `id (32) || sealed blob`: the blob sealed anew under the master key, opened under it or the
   * previous master key ({@linkcode CompartmentOptions.previousMasterKeyPath}). Caches nothing.
   */
  RESEAL: 13,
  /**
   * `alg (1) || flags (1) || spki length (u16 LE) || spki || signature length (u16 LE) || signature || message`:
   * one byte, 1 when the signature is valid, 0 when not (ABI.md, kc_verify). Public values only.
   */
  VERIFY: 14,
} as const;
/** One of {@linkcode Op}. */
export type Op = typeof Op[keyof typeof Op];

/** What a failed guest or compartment status means to a caller. */
export interface StatusMeaning {
  /** The status byte on the wire. */
  value: number;
  /** The error it becomes for HTTP clients (and, unless `keyless` says otherwise, on the Keyless wire). */
  error: ErrorCode;
  /** The Keyless SSL error, where it differs from {@linkcode ERROR_CODES}' for `error`. */
  keyless?: KeylessError;
  /** The message callers see. */
  message: string;
}

/**
 * Every response status, with what it means to callers: the one table that the host, the
 * Keyless server and the key server map statuses through. 1..10 are the guest's own error codes
 * negated (rust-signer/ABI.md, checked by test/guest_codes_test.ts); 32.. are the compartment's.
 */
export const STATUSES = {
  BAD_REQUEST: { value: 1, error: "bad_request", message: "the signer rejected the request as malformed" },
  KEY_NOT_FOUND: { value: 2, error: "key_not_found", message: "no key with that id" },
  BAD_KEY: { value: 3, error: "bad_request", message: "not a supported private key" },
  WRONG_KEY_TYPE: {
    value: 4,
    error: "bad_request",
    keyless: KeylessError.CRYPTO_FAILED,
    message: "the algorithm is not valid for this key",
  },
  BAD_DIGEST_LENGTH: { value: 5, error: "bad_request", message: "the digest length does not match the algorithm" },
  CRYPTO_FAILURE: {
    value: 6,
    error: "internal",
    keyless: KeylessError.CRYPTO_FAILED,
    message: "the signer could not complete the operation",
  },
  NO_SPACE: { value: 7, error: "signer_unavailable", message: "the signer has no room for more keys" },
  /** A sealed blob that is corrupt, truncated, sealed under another master key or for another id. */
  SEAL_INVALID: {
    value: 8,
    error: "key_unusable",
    message:
      "the stored key does not open: its sealed blob is corrupt, truncated, or sealed under another master key or for another id",
  },
  NO_MASTER_KEY: { value: 9, error: "internal", message: "the signer has no master key" },
  /** A wrapped import that does not unwrap to a key of the stated spec. */
  BAD_WRAPPED: {
    value: 10,
    error: "bad_request",
    message: "wrappedKey does not unwrap to a private key of that keySpec with this wrapping key",
  },
  /** The guest trapped; this request failed and the compartment re-created the instance. */
  GUEST_TRAPPED: { value: 32, error: "internal", message: "the signer failed on this request and was restarted" },
  /** The compartment is not running (starting, crashed, shut down). */
  UNAVAILABLE: { value: 33, error: "signer_unavailable", message: "the signer is not available" },
  /** The compartment does not know the operation. */
  BAD_OP: { value: 34, error: "internal", message: "the signer did not understand the request" },
} as const satisfies Record<string, StatusMeaning>;

/** Response status bytes by name: `OK` (0) and every failure in {@linkcode STATUSES}. */
export const Status = {
  OK: 0,
  ...Object.fromEntries(Object.entries(STATUSES).map(([name, s]) => [name, s.value])),
} as { readonly OK: 0 } & { readonly [K in keyof typeof STATUSES]: (typeof STATUSES)[K]["value"] };
/** One of {@linkcode Status}. */
export type Status = typeof Status[keyof typeof Status];

const MEANING_BY_VALUE = new Map<number, StatusMeaning>(Object.values(STATUSES).map((s) => [s.value, s]));

/**
 * The error a failed status stands for; an unknown status is `internal`.
 *
 * @example
 * ```ts
 * import { Status, statusError } from "./protocol.ts";
 *
 * statusError(Status.SEAL_INVALID).code; // "key_unusable"
 * ```
 */
export function statusError(status: number): KeycellError {
  const meaning = MEANING_BY_VALUE.get(status);
  if (meaning === undefined) return new KeycellError("internal", `the signer answered status ${status}`);
  return new KeycellError(meaning.error, meaning.message, undefined, meaning.keyless);
}

/** Sign flag: the message is RAW and the guest hashes it. */
export const FLAG_RAW_MESSAGE = 1;
/** Sign flag: ECDSA signatures as fixed-width `r || s` instead of DER. */
export const FLAG_ECDSA_RAW_SIGNATURE = 2;

/**
 * The flags byte a sign or verify request carries for how its message and signature are given.
 *
 * @example
 * ```ts
 * import { messageFlags } from "./protocol.ts";
 *
 * messageFlags({ messageType: "RAW", signatureFormat: "RAW" }); // 3
 * messageFlags({ messageType: "DIGEST" }); // 0
 * ```
 */
export function messageFlags(request: { messageType: "DIGEST" | "RAW"; signatureFormat?: "DER" | "RAW" }): number {
  return (request.messageType === "RAW" ? FLAG_RAW_MESSAGE : 0) | (request.signatureFormat === "RAW" ? FLAG_ECDSA_RAW_SIGNATURE : 0);
}

/** Each key spec by its code on the wire. */
export const SPEC_BY_CODE: ReadonlyMap<number, KeySpec> = new Map<number, KeySpec>(
  Object.entries(KEY_SPEC_CODES).map(([name, code]) => [code, name as KeySpec]),
);

/** A public description of a key held by the guest. */
export interface KeyRecord {
  /** Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER. */
  id: string;
  keySpec: KeySpec;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
  /** The key sealed under the master key, when the guest sealed it (generate, load, import). Not secret. */
  sealed?: Uint8Array;
}

/** kc_generate's spec byte for an RSA-4096 key wrapping key, sealed for wrapping and never cached. */
export const WRAPPING_KEY_SPEC = 0x83;

/** Length of a key id in bytes. */
export const KEY_ID_BYTES = 32;

/** A key id as text: 64 lowercase hex digits. */
export const KEY_ID_PATTERN = /^[0-9a-f]{64}$/;

/**
 * Encodes a request.
 *
 * @example
 * ```ts
 * import { encodeRequest, Op } from "./protocol.ts";
 *
 * encodeRequest(Op.LIST); // Uint8Array [6]
 * encodeRequest(Op.DROP, new Uint8Array(32)); // op, then the 32-byte key id
 * ```
 */
export function encodeRequest(op: Op, ...parts: Uint8Array[]): Uint8Array {
  return prefixed(op, parts);
}

/** One signature to check, public values only. */
export interface VerifyRequest {
  /** SubjectPublicKeyInfo DER of the key. */
  publicKey: Uint8Array;
  algorithm: AlgorithmName;
  /** DIGEST: `message` is the digest. RAW: the guest hashes `message`. */
  messageType: "DIGEST" | "RAW";
  message: Uint8Array;
  signature: Uint8Array;
  /** ECDSA only: DER (default) or fixed-width `r || s`. */
  signatureFormat?: "DER" | "RAW";
}

/** The longest signature or SPKI a VERIFY request carries (a u16 length); every real one is far shorter. */
const MAX_VERIFY_FIELD = 0xffff;

/** Each algorithm by its code on the wire. */
export const ALGORITHM_BY_CODE: ReadonlyMap<number, AlgorithmName> = new Map<number, AlgorithmName>(
  Object.entries(ALGORITHM_CODES).map(([name, code]) => [code, name as AlgorithmName]),
);

/**
 * The body of a VERIFY request (what follows its op byte), as kc_verify reads it:
 * `alg (1) || flags (1) || spki length (u16 LE) || spki || signature length (u16 LE) || signature || message`.
 * Undefined for a signature or key too long to carry, which no key of keycell's makes or has.
 *
 * @example
 * ```ts
 * import { decodeVerify, encodeVerify } from "./protocol.ts";
 *
 * const body = encodeVerify({
 *   publicKey: new Uint8Array(91),
 *   algorithm: "ECDSA_SHA_256",
 *   messageType: "DIGEST",
 *   message: new Uint8Array(32),
 *   signature: new Uint8Array(64),
 *   signatureFormat: "RAW",
 * })!;
 * body.length; // 2 + 2 + 91 + 2 + 64 + 32
 * decodeVerify(body)?.signatureFormat; // "RAW"
 * ```
 */
export function encodeVerify(request: VerifyRequest): Uint8Array | undefined {
  const { publicKey, signature, message } = request;
  if (publicKey.length > MAX_VERIFY_FIELD || signature.length > MAX_VERIFY_FIELD) return undefined;
  const out = new Uint8Array(6 + publicKey.length + signature.length + message.length);
  const view = new DataView(out.buffer);
  out[0] = ALGORITHM_CODES[request.algorithm];
  out[1] = messageFlags(request);
  view.setUint16(2, publicKey.length, true);
  out.set(publicKey, 4);
  view.setUint16(4 + publicKey.length, signature.length, true);
  out.set(signature, 6 + publicKey.length);
  out.set(message, 6 + publicKey.length + signature.length);
  return out;
}

/**
 * The request an {@linkcode encodeVerify} body carries, or undefined for a malformed one.
 *
 * @example
 * ```ts
 * import { decodeVerify } from "./protocol.ts";
 *
 * decodeVerify(new Uint8Array(3)); // undefined: too short
 * ```
 */
export function decodeVerify(body: Uint8Array): VerifyRequest | undefined {
  const algorithm = ALGORITHM_BY_CODE.get(body[0]);
  if (algorithm === undefined || body.length < 6 || (body[1] & ~(FLAG_RAW_MESSAGE | FLAG_ECDSA_RAW_SIGNATURE)) !== 0) return undefined;
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const spkiEnd = 4 + view.getUint16(2, true);
  if (spkiEnd + 2 > body.length) return undefined;
  const signatureEnd = spkiEnd + 2 + view.getUint16(spkiEnd, true);
  if (signatureEnd > body.length) return undefined;
  const request: VerifyRequest = {
    publicKey: body.slice(4, spkiEnd),
    algorithm,
    messageType: body[1] & FLAG_RAW_MESSAGE ? "RAW" : "DIGEST",
    message: body.slice(signatureEnd),
    signature: body.slice(spkiEnd + 2, signatureEnd),
  };
  if (body[1] & FLAG_ECDSA_RAW_SIGNATURE) request.signatureFormat = "RAW";
  return request;
}

/**
 * Encodes a response; the compartment's side of {@linkcode decodeResponse}.
 *
 * @example
 * ```ts
 * import { encodeResponse, Status } from "./protocol.ts";
 *
 * encodeResponse(Status.KEY_NOT_FOUND); // Uint8Array [2]
 * ```
 */
export function encodeResponse(status: Status, ...body: Uint8Array[]): Uint8Array {
  return prefixed(status, body);
}

/** One byte, then the parts one after another. */
function prefixed(first: number, parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 1));
  out[0] = first;
  let at = 1;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Splits a response into its status and body. A response with no status byte is `BAD_OP`.
 *
 * @example
 * ```ts
 * import { decodeResponse } from "./protocol.ts";
 *
 * const { status, body } = decodeResponse(new Uint8Array([0, 1, 2])); // status 0 (OK), body [1, 2]
 * ```
 */
export function decodeResponse(res: Uint8Array): { status: Status; body: Uint8Array } {
  if (res.length === 0) return { status: Status.BAD_OP, body: res };
  return { status: res[0] as Status, body: res.subarray(1) };
}

/**
 * Converts a lowercase hex key id to its 32 bytes, or `undefined` when it is not one.
 *
 * @example
 * ```ts
 * import { keyIdBytes } from "./protocol.ts";
 *
 * keyIdBytes("00".repeat(32)); // Uint8Array(32)
 * keyIdBytes("../etc");        // undefined
 * ```
 */
export function keyIdBytes(id: string): Uint8Array | undefined {
  return KEY_ID_PATTERN.test(id) ? Uint8Array.fromHex(id) : undefined;
}

/**
 * Converts bytes to lowercase hex.
 *
 * @example
 * ```ts
 * import { toHex } from "./protocol.ts";
 *
 * toHex(new Uint8Array([1, 255])); // "01ff"
 * ```
 */
export function toHex(bytes: Uint8Array): string {
  return bytes.toHex();
}

/**
 * Parses a key record (`spec || id || spki`), or returns `undefined` when it is malformed.
 *
 * @example
 * ```ts
 * import { decodeKeyRecord, encodeKeyRecord } from "./protocol.ts";
 *
 * const spki = new Uint8Array([0x30, 0x01, 0x00]); // any DER SEQUENCE
 * const body = encodeKeyRecord({ id: "ab".repeat(32), keySpec: "ECC_NIST_P256", spki });
 * decodeKeyRecord(body); // { keySpec: "ECC_NIST_P256", id: "abab…", spki }
 * decodeKeyRecord(new Uint8Array([0xff])); // undefined
 * ```
 */
export function decodeKeyRecord(body: Uint8Array): KeyRecord | undefined {
  const keySpec = SPEC_BY_CODE.get(body[0]);
  if (keySpec === undefined || body.length <= 1 + KEY_ID_BYTES) return undefined;
  const at = 1 + KEY_ID_BYTES;
  const spkiLength = derLength(body.subarray(at));
  if (spkiLength === undefined || at + spkiLength > body.length) return undefined;
  const rest = body.subarray(at + spkiLength);
  return {
    keySpec,
    id: toHex(body.subarray(1, at)),
    spki: body.slice(at, at + spkiLength),
    ...(rest.length > 0 ? { sealed: rest.slice() } : {}),
  };
}

/** Total length of the DER SEQUENCE at the start of `der` (an SPKI is under 64 KiB). */
function derLength(der: Uint8Array): number | undefined {
  if (der[0] !== 0x30 || der.length < 2) return undefined;
  if (der[1] < 0x80) return 2 + der[1];
  if (der[1] === 0x81 && der.length >= 3) return 3 + der[2];
  if (der[1] === 0x82 && der.length >= 4) return 4 + ((der[2] << 8) | der[3]);
  return undefined;
}

/**
 * Parses a key list (`count u32 LE || (spec || id) * count`).
 *
 * @example
 * ```ts
 * import { decodeKeyList, encodeKeyList } from "./protocol.ts";
 *
 * const body = encodeKeyList([{ id: "01".repeat(32), keySpec: "RSA_2048" }]);
 * decodeKeyList(body); // [{ keySpec: "RSA_2048", id: "0101…" }]
 * ```
 */
export function decodeKeyList(body: Uint8Array): { id: string; keySpec: KeySpec }[] | undefined {
  if (body.length < 4) return undefined;
  const count = new DataView(body.buffer, body.byteOffset, 4).getUint32(0, true);
  const entry = 1 + KEY_ID_BYTES;
  if (body.length !== 4 + count * entry) return undefined;
  const out: { id: string; keySpec: KeySpec }[] = [];
  for (let i = 0; i < count; i++) {
    const at = 4 + i * entry;
    const keySpec = SPEC_BY_CODE.get(body[at]);
    if (keySpec === undefined) return undefined;
    out.push({ keySpec, id: toHex(body.subarray(at + 1, at + entry)) });
  }
  return out;
}

/**
 * Encodes a key record (`spec || id || spki`), the form the guest answers PUBLIC_KEY with.
 *
 * @example
 * ```ts
 * import { encodeKeyRecord } from "./protocol.ts";
 *
 * const spki = new Uint8Array([0x30, 0x01, 0x00]); // SubjectPublicKeyInfo DER
 * const body = encodeKeyRecord({ id: "ab".repeat(32), keySpec: "ECC_NIST_P256", spki });
 * body.length; // 1 + 32 + 3
 * ```
 */
export function encodeKeyRecord(record: { id: string; keySpec: KeySpec; spki: Uint8Array }): Uint8Array {
  const out = new Uint8Array(1 + KEY_ID_BYTES + record.spki.length);
  out[0] = KEY_SPEC_CODES[record.keySpec];
  out.set(keyIdBytes(record.id)!, 1);
  out.set(record.spki, 1 + KEY_ID_BYTES);
  return out;
}

/**
 * Encodes a key list (`count u32 LE || (spec || id) * count`), the form the guest answers LIST with.
 *
 * @example
 * ```ts
 * import { encodeKeyList } from "./protocol.ts";
 *
 * const body = encodeKeyList([{ id: "01".repeat(32), keySpec: "RSA_2048" }]);
 * body.length; // 4 + 33
 * ```
 */
export function encodeKeyList(keys: readonly { id: string; keySpec: KeySpec }[]): Uint8Array {
  const entry = 1 + KEY_ID_BYTES;
  const out = new Uint8Array(4 + keys.length * entry);
  new DataView(out.buffer).setUint32(0, keys.length, true);
  keys.forEach(({ id, keySpec }, i) => {
    out[4 + i * entry] = KEY_SPEC_CODES[keySpec];
    out.set(keyIdBytes(id)!, 5 + i * entry);
  });
  return out;
}

/**
 * One LIST answer from the LIST answers of several guests: the first that failed, or the union of
 * their keys (a key several hold listed once).
 *
 * @example
 * ```ts
 * import { encodeKeyList, encodeResponse, mergeKeyLists, Status } from "./protocol.ts";
 *
 * const a = encodeResponse(Status.OK, encodeKeyList([{ id: "01".repeat(32), keySpec: "RSA_2048" }]));
 * const b = encodeResponse(Status.OK, encodeKeyList([{ id: "01".repeat(32), keySpec: "RSA_2048" }]));
 * mergeKeyLists([a, b]).length; // 1 + 4 + 33
 * ```
 */
export function mergeKeyLists(responses: readonly Uint8Array[]): Uint8Array {
  const failed = responses.find((r) => decodeResponse(r).status !== Status.OK);
  if (failed !== undefined) return failed;
  const merged = new Map<string, KeySpec>();
  for (const response of responses) {
    for (const { id, keySpec } of decodeKeyList(decodeResponse(response).body) ?? []) merged.set(id, keySpec);
  }
  return encodeResponse(Status.OK, encodeKeyList([...merged].map(([id, keySpec]) => ({ id, keySpec }))));
}

/** What loading one file from the key directory did. File names and ids are not secret. */
export interface KeyFileReport {
  file: string;
  id?: string;
  keySpec?: string;
  /** The key sealed under the master key, for the key store (not secret). */
  sealed?: Uint8Array;
  /** Why the file was not loaded. */
  error?: string;
}
