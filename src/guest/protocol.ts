/**
 * The message-level signer protocol: request bytes in, response bytes out.
 *
 * Every signer client (inline, worker, process) carries these bytes unchanged to the signer
 * compartment, which is the only code that talks to the guest. Nothing here touches the guest
 * instance; the codes mirror `rust-signer/ABI.md`.
 *
 * Request: `op (1) || body`. Response: `status (1) || body`, status 0 on success.
 *
 * @module
 */

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
} as const;
/** One of {@linkcode Op}. */
export type Op = typeof Op[keyof typeof Op];

/**
 * Requests a key server answers from its key store (src/keyless/store_signer.ts), so that a host
 * in `process` mode has the sealed-key routes too. They travel like guest requests but never
 * reach a guest (one would answer `BAD_OP`).
 */
export const StoreOp = {
  /** `limit (u16 LE) || cursor id (32, optional)` answers `has next (1) || next cursor id (32, when it has) || key list`. */
  LIST_PAGE: 0xe1,
  /** Answers the wrapping key's record (RSA-4096 SPKI). */
  WRAPPING_KEY: 0xe2,
  /** `spec || wrapped key` answers the imported key's record. */
  IMPORT_WRAPPED: 0xe3,
} as const;
/** One of {@linkcode StoreOp}. */
export type StoreOp = typeof StoreOp[keyof typeof StoreOp];

/**
 * Response statuses. 1..7 are the guest's own error codes negated (see ABI.md); the rest are the
 * compartment's.
 */
export const Status = {
  OK: 0,
  BAD_REQUEST: 1,
  KEY_NOT_FOUND: 2,
  BAD_KEY: 3,
  WRONG_KEY_TYPE: 4,
  BAD_DIGEST_LENGTH: 5,
  CRYPTO_FAILURE: 6,
  NO_SPACE: 7,
  /** A sealed blob that is corrupt, truncated, sealed under another master key or for another id. */
  SEAL_INVALID: 8,
  NO_MASTER_KEY: 9,
  /** A wrapped import that does not unwrap to a key of the stated spec. */
  BAD_WRAPPED: 10,
  /** The guest trapped; this request failed and the compartment re-created the instance. */
  GUEST_TRAPPED: 32,
  /** The compartment is not running (starting, crashed, shut down). */
  UNAVAILABLE: 33,
  /** The compartment does not know the operation. */
  BAD_OP: 34,
} as const;
/** One of {@linkcode Status}. */
export type Status = typeof Status[keyof typeof Status];

/** Key spec codes shared with the guest, by AWS KMS name. */
export const KEY_SPEC_CODES = {
  RSA_2048: 1,
  RSA_3072: 2,
  RSA_4096: 3,
  ECC_NIST_P256: 4,
  ECC_NIST_P384: 5,
} as const;
/** A key spec name. */
export type KeySpec = keyof typeof KEY_SPEC_CODES;

/** Algorithm codes shared with the guest, by AWS KMS name (the last six serve Keyless SSL only). */
export const ALGORITHM_CODES = {
  RSASSA_PKCS1_V1_5_SHA_256: 1,
  RSASSA_PKCS1_V1_5_SHA_384: 2,
  RSASSA_PKCS1_V1_5_SHA_512: 3,
  RSASSA_PSS_SHA_256: 4,
  RSASSA_PSS_SHA_384: 5,
  RSASSA_PSS_SHA_512: 6,
  ECDSA_SHA_256: 7,
  ECDSA_SHA_384: 8,
  ECDSA_SHA_512: 9,
  RSASSA_PKCS1_V1_5_SHA_1: 10,
  RSASSA_PKCS1_V1_5_SHA_224: 11,
  RSASSA_PKCS1_V1_5_MD5_SHA1: 12,
  ECDSA_SHA_1: 13,
  ECDSA_SHA_224: 14,
  ECDSA_MD5_SHA1: 15,
} as const;
/** An algorithm name. */
export type AlgorithmName = keyof typeof ALGORITHM_CODES;

/** Sign flag: the message is RAW and the guest hashes it. */
export const FLAG_RAW_MESSAGE = 1;
/** Sign flag: ECDSA signatures as fixed-width `r || s` instead of DER. */
export const FLAG_ECDSA_RAW_SIGNATURE = 2;

const SPEC_BY_CODE = new Map<number, KeySpec>(
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
 * const req = encodeRequest(Op.LIST);
 * ```
 */
export function encodeRequest(op: Op | StoreOp, ...parts: Uint8Array[]): Uint8Array {
  return prefixed(op, parts);
}

/**
 * Encodes a response; the compartment's side of {@linkcode decodeResponse}.
 *
 * @example
 * ```ts
 * const res = encodeResponse(Status.KEY_NOT_FOUND);
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
 * const { status, body } = decodeResponse(new Uint8Array([0, 1, 2]));
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
 * const record = decodeKeyRecord(body);
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
 * const keys = decodeKeyList(body); // [{ id, keySpec }, ...]
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
 * const body = encodeKeyRecord({ id, keySpec: "ECC_NIST_P256", spki });
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
 * const body = encodeKeyList([{ id, keySpec: "RSA_2048" }]);
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
