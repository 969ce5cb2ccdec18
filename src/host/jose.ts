/**
 * JOSE for the HTTP API: the JWS algorithms keycell signs with and the keys each fits (RFC 7518,
 * section 3), public keys as JWKs (RFC 7517), and base64url without padding (RFC 7515, section 2).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createPublicKey, type JsonWebKey } from "node:crypto";
import { KEY_SPECS, type KeySpec, type SigningAlgorithmName } from "../core/algorithms.ts";
import { KeycellError } from "../core/errors.ts";
import type { KeyInfo } from "../core/signer_client.ts";

const RSA_SPECS = ["RSA_2048", "RSA_3072", "RSA_4096"] as const;

/**
 * Every JWS `alg` keycell signs with: the algorithm the guest runs and the key specs it fits. JOSE
 * ties an ECDSA algorithm to one curve (ES256 is P-256 with SHA-256), and wants PSS with a salt of
 * the hash's length, which is keycell's.
 */
export const JWS_ALGORITHMS = {
  ES256: { algorithm: "ECDSA_SHA_256", keySpecs: ["ECC_NIST_P256"] },
  ES384: { algorithm: "ECDSA_SHA_384", keySpecs: ["ECC_NIST_P384"] },
  RS256: { algorithm: "RSASSA_PKCS1_V1_5_SHA_256", keySpecs: RSA_SPECS },
  RS384: { algorithm: "RSASSA_PKCS1_V1_5_SHA_384", keySpecs: RSA_SPECS },
  RS512: { algorithm: "RSASSA_PKCS1_V1_5_SHA_512", keySpecs: RSA_SPECS },
  PS256: { algorithm: "RSASSA_PSS_SHA_256", keySpecs: RSA_SPECS },
  PS384: { algorithm: "RSASSA_PSS_SHA_384", keySpecs: RSA_SPECS },
  PS512: { algorithm: "RSASSA_PSS_SHA_512", keySpecs: RSA_SPECS },
} as const satisfies Record<string, { algorithm: SigningAlgorithmName; keySpecs: readonly KeySpec[] }>;

/** A JWS `alg` keycell signs with. */
export type JwsAlgorithm = keyof typeof JWS_ALGORITHMS;

/** The names of {@linkcode JWS_ALGORITHMS}, for schemas. */
export const JWS_ALGORITHM_NAMES = Object.keys(JWS_ALGORITHMS) as [JwsAlgorithm, ...JwsAlgorithm[]];

/**
 * The `alg` a key signs JWTs with unless asked for another: ES256 for P-256, ES384 for P-384,
 * RS256 for RSA.
 *
 * @example
 * ```ts
 * import { defaultJwsAlgorithm } from "./jose.ts";
 *
 * defaultJwsAlgorithm("ECC_NIST_P384"); // "ES384"
 * ```
 */
export function defaultJwsAlgorithm(keySpec: KeySpec): JwsAlgorithm {
  return keySpec === "ECC_NIST_P256" ? "ES256" : keySpec === "ECC_NIST_P384" ? "ES384" : "RS256";
}

/**
 * The guest's algorithm for a JWS `alg`, or 400 `bad_request` when the key cannot sign with it.
 *
 * @example
 * ```ts
 * import { jwsSigningAlgorithm } from "./jose.ts";
 *
 * jwsSigningAlgorithm("PS256", "RSA_2048"); // "RSASSA_PSS_SHA_256"
 * jwsSigningAlgorithm("ES256", "ECC_NIST_P384"); // throws bad_request: ES256 is P-256's
 * ```
 */
export function jwsSigningAlgorithm(alg: JwsAlgorithm, keySpec: KeySpec): SigningAlgorithmName {
  const entry = JWS_ALGORITHMS[alg];
  if (!(entry.keySpecs as readonly KeySpec[]).includes(keySpec)) {
    throw new KeycellError("bad_request", `alg ${alg} needs a key of ${entry.keySpecs.join(" or ")}, and this key is ${keySpec}`);
  }
  return entry.algorithm;
}

/** A public key as a JWK, as keycell answers it. */
export interface PublicJwk {
  kty: "EC" | "RSA";
  /** EC: the curve, `P-256` or `P-384`. */
  crv?: string;
  x?: string;
  y?: string;
  /** RSA: modulus and public exponent. */
  n?: string;
  e?: string;
  use: "sig";
  /** The key's id (lowercase hex SHA-256 of its SPKI), as the rest of the API names it. */
  kid: string;
  /** EC keys only (ES256 or ES384): an RSA key signs with RS* and PS* alike, so it names none. */
  alg?: JwsAlgorithm;
}

/**
 * A key's public half as a JWK: `kid` is the key id, `use` is `sig`, and `alg` is set for EC keys,
 * whose curve fixes it.
 *
 * @example
 * ```ts
 * import type { KeyInfo } from "../core/signer_client.ts";
 * import { publicJwk } from "./jose.ts";
 *
 * declare const key: KeyInfo;
 * const jwk = publicJwk(key); // { kty: "EC", crv: "P-256", x, y, use: "sig", kid: key.id, alg: "ES256" }
 * ```
 */
export function publicJwk(key: KeyInfo): PublicJwk {
  const exported = jwkParameters(key.publicKey);
  const family = KEY_SPECS[key.keySpec].family;
  const parts = family === "EC"
    ? { kty: "EC" as const, crv: exported.crv, x: exported.x, y: exported.y }
    : { kty: "RSA" as const, n: exported.n, e: exported.e };
  return { ...parts, use: "sig", kid: key.id, ...(family === "EC" ? { alg: defaultJwsAlgorithm(key.keySpec) } : {}) };
}

/**
 * The key parameters of an SPKI (EC: `kty`, `crv`, `x`, `y`; RSA: `kty`, `n`, `e`), by node:crypto.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync } from "node:crypto";
 * import { jwkParameters } from "./jose.ts";
 *
 * const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
 * jwkParameters(publicKey.export({ type: "spki", format: "der" })).e; // "AQAB"
 * ```
 */
export function jwkParameters(spki: Uint8Array): JsonWebKey {
  return createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" }).export({ format: "jwk" });
}

/**
 * base64url without padding, as JOSE writes bytes.
 *
 * @example
 * ```ts
 * import { base64url } from "./jose.ts";
 *
 * base64url(Uint8Array.of(0xfb, 0xff)); // "-_8"
 * ```
 */
export function base64url(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/**
 * Decodes base64url without padding, or returns `undefined` for anything else (padding,
 * standard-alphabet letters, whitespace, non-zero trailing bits).
 *
 * @example
 * ```ts
 * import { decodeBase64url } from "./jose.ts";
 *
 * decodeBase64url("-_8"); // Uint8Array [0xfb, 0xff]
 * decodeBase64url("-_8="); // undefined
 * ```
 */
export function decodeBase64url(text: string): Uint8Array | undefined {
  let bytes: Uint8Array;
  try {
    // "loose" reads an unpadded last chunk; only the one canonical spelling is then accepted.
    bytes = Uint8Array.fromBase64(text, { alphabet: "base64url", lastChunkHandling: "loose" });
  } catch {
    return undefined;
  }
  return base64url(bytes) === text ? bytes : undefined;
}
