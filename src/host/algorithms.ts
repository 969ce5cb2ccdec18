/**
 * The key specs and signing algorithms keycell offers over HTTP, named as AWS KMS names them.
 * One constant per algorithm and parameter set; nothing is chosen at run time from free text.
 *
 * @module
 */

import type { AlgorithmName, KeySpec } from "../guest/protocol.ts";

export type { KeySpec };

/** A key family: which algorithms a key can serve. */
export type KeyFamily = "RSA" | "EC";

/** Every key spec, with its family. */
export const KEY_SPECS = {
  RSA_2048: { family: "RSA" },
  RSA_3072: { family: "RSA" },
  RSA_4096: { family: "RSA" },
  ECC_NIST_P256: { family: "EC" },
  ECC_NIST_P384: { family: "EC" },
} as const satisfies Record<KeySpec, { family: KeyFamily }>;

/** The names of {@linkcode KEY_SPECS}, for schemas. */
export const KEY_SPEC_NAMES = Object.keys(KEY_SPECS) as [KeySpec, ...KeySpec[]];

/** A signing algorithm offered over HTTP. */
export interface SigningAlgorithm {
  family: KeyFamily;
  /** Length of the digest a DIGEST message must have. */
  digestBytes: number;
}

/** The HTTP API's signing algorithms. The Keyless-only ones stay off this list. */
export const SIGNING_ALGORITHMS = {
  RSASSA_PKCS1_V1_5_SHA_256: { family: "RSA", digestBytes: 32 },
  RSASSA_PKCS1_V1_5_SHA_384: { family: "RSA", digestBytes: 48 },
  RSASSA_PKCS1_V1_5_SHA_512: { family: "RSA", digestBytes: 64 },
  RSASSA_PSS_SHA_256: { family: "RSA", digestBytes: 32 },
  RSASSA_PSS_SHA_384: { family: "RSA", digestBytes: 48 },
  RSASSA_PSS_SHA_512: { family: "RSA", digestBytes: 64 },
  ECDSA_SHA_256: { family: "EC", digestBytes: 32 },
  ECDSA_SHA_384: { family: "EC", digestBytes: 48 },
  ECDSA_SHA_512: { family: "EC", digestBytes: 64 },
} as const satisfies Partial<Record<AlgorithmName, SigningAlgorithm>>;

/** A name from {@linkcode SIGNING_ALGORITHMS}. */
export type SigningAlgorithmName = keyof typeof SIGNING_ALGORITHMS;

/** The names of {@linkcode SIGNING_ALGORITHMS}, for schemas. */
export const SIGNING_ALGORITHM_NAMES = Object.keys(SIGNING_ALGORITHMS) as [
  SigningAlgorithmName,
  ...SigningAlgorithmName[],
];
