/**
 * The one table of key specs and signing algorithms, named as AWS KMS names them. Every other
 * map (the guest's codes, the HTTP API's names, the Keyless SSL opcodes) is derived from it, so
 * adding an algorithm or a key spec is one row here and its case in the guest
 * (rust-signer/src/codes.rs, checked against this table by test/guest_codes_test.ts).
 *
 * @module
 */

/** A key family: which algorithms a key can serve. */
export type KeyFamily = "RSA" | "EC";

/** Every key spec: its code in the guest and its family. */
export const KEY_SPECS = {
  RSA_2048: { code: 1, family: "RSA" },
  RSA_3072: { code: 2, family: "RSA" },
  RSA_4096: { code: 3, family: "RSA" },
  ECC_NIST_P256: { code: 4, family: "EC" },
  ECC_NIST_P384: { code: 5, family: "EC" },
} as const satisfies Record<string, { code: number; family: KeyFamily }>;

/** A key spec name. */
export type KeySpec = keyof typeof KEY_SPECS;

/** A hash a signing algorithm uses; `MD5_SHA1` is TLS 1.0's concatenation of the two. */
export type HashName = "SHA_256" | "SHA_384" | "SHA_512" | "SHA_1" | "SHA_224" | "MD5_SHA1";

/** One signing algorithm. */
export interface Algorithm {
  /** Its code in the guest. */
  code: number;
  family: KeyFamily;
  hash: HashName;
  /** Length of the digest a DIGEST message must have. */
  digestBytes: number;
  /** The Keyless SSL opcode that asks for it. */
  keylessOpcode: number;
  /** Offered by the HTTP API; the others serve Keyless SSL's TLS 1.0-1.2 clients only. */
  http: boolean;
}

/** Every signing algorithm. */
export const ALGORITHMS = {
  RSASSA_PKCS1_V1_5_SHA_256: { code: 1, family: "RSA", hash: "SHA_256", digestBytes: 32, keylessOpcode: 0x05, http: true },
  RSASSA_PKCS1_V1_5_SHA_384: { code: 2, family: "RSA", hash: "SHA_384", digestBytes: 48, keylessOpcode: 0x06, http: true },
  RSASSA_PKCS1_V1_5_SHA_512: { code: 3, family: "RSA", hash: "SHA_512", digestBytes: 64, keylessOpcode: 0x07, http: true },
  RSASSA_PSS_SHA_256: { code: 4, family: "RSA", hash: "SHA_256", digestBytes: 32, keylessOpcode: 0x35, http: true },
  RSASSA_PSS_SHA_384: { code: 5, family: "RSA", hash: "SHA_384", digestBytes: 48, keylessOpcode: 0x36, http: true },
  RSASSA_PSS_SHA_512: { code: 6, family: "RSA", hash: "SHA_512", digestBytes: 64, keylessOpcode: 0x37, http: true },
  ECDSA_SHA_256: { code: 7, family: "EC", hash: "SHA_256", digestBytes: 32, keylessOpcode: 0x15, http: true },
  ECDSA_SHA_384: { code: 8, family: "EC", hash: "SHA_384", digestBytes: 48, keylessOpcode: 0x16, http: true },
  ECDSA_SHA_512: { code: 9, family: "EC", hash: "SHA_512", digestBytes: 64, keylessOpcode: 0x17, http: true },
  RSASSA_PKCS1_V1_5_SHA_1: { code: 10, family: "RSA", hash: "SHA_1", digestBytes: 20, keylessOpcode: 0x03, http: false },
  RSASSA_PKCS1_V1_5_SHA_224: { code: 11, family: "RSA", hash: "SHA_224", digestBytes: 28, keylessOpcode: 0x04, http: false },
  RSASSA_PKCS1_V1_5_MD5_SHA1: { code: 12, family: "RSA", hash: "MD5_SHA1", digestBytes: 36, keylessOpcode: 0x02, http: false },
  ECDSA_SHA_1: { code: 13, family: "EC", hash: "SHA_1", digestBytes: 20, keylessOpcode: 0x13, http: false },
  ECDSA_SHA_224: { code: 14, family: "EC", hash: "SHA_224", digestBytes: 28, keylessOpcode: 0x14, http: false },
  ECDSA_MD5_SHA1: { code: 15, family: "EC", hash: "MD5_SHA1", digestBytes: 36, keylessOpcode: 0x12, http: false },
} as const satisfies Record<string, Algorithm>;

/** An algorithm name. */
export type AlgorithmName = keyof typeof ALGORITHMS;

/** Key spec codes shared with the guest, by name. */
export const KEY_SPEC_CODES = Object.fromEntries(
  Object.entries(KEY_SPECS).map(([name, spec]) => [name, spec.code]),
) as { readonly [K in KeySpec]: (typeof KEY_SPECS)[K]["code"] };

/** Algorithm codes shared with the guest, by name. */
export const ALGORITHM_CODES = Object.fromEntries(
  Object.entries(ALGORITHMS).map(([name, algorithm]) => [name, algorithm.code]),
) as { readonly [K in AlgorithmName]: (typeof ALGORITHMS)[K]["code"] };

/** The names of {@linkcode KEY_SPECS}, for schemas. */
export const KEY_SPEC_NAMES = Object.keys(KEY_SPECS) as [KeySpec, ...KeySpec[]];

/** The HTTP API's signing algorithms. */
export type SigningAlgorithmName = {
  [K in AlgorithmName]: (typeof ALGORITHMS)[K]["http"] extends true ? K : never;
}[AlgorithmName];

/** The names of the HTTP API's signing algorithms, for schemas. */
export const SIGNING_ALGORITHM_NAMES = Object.entries(ALGORITHMS)
  .filter(([, algorithm]) => algorithm.http)
  .map(([name]) => name) as [SigningAlgorithmName, ...SigningAlgorithmName[]];

/**
 * The algorithm each Keyless SSL sign opcode asks for.
 *
 * @example
 * ```ts
 * import { ALGORITHM_BY_KEYLESS_OPCODE } from "./algorithms.ts";
 *
 * ALGORITHM_BY_KEYLESS_OPCODE.get(0x15); // "ECDSA_SHA_256"
 * ```
 */
export const ALGORITHM_BY_KEYLESS_OPCODE: ReadonlyMap<number, AlgorithmName> = new Map(
  Object.entries(ALGORITHMS).map(([name, algorithm]) => [algorithm.keylessOpcode, name as AlgorithmName]),
);
