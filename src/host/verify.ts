/**
 * Signature verification with a public key, in the host: no private key and no guest is
 * involved. A whole message (`RAW`) is verified by WebCrypto, which hashes it. A digest (`DIGEST`)
 * cannot be: neither WebCrypto nor node:crypto verifies a hash made elsewhere (node:crypto has
 * PKCS#1 v1.5 only, by `publicDecrypt`). So digests are verified here from the definitions, on
 * public values only: RSA as `s^e mod n` and the PKCS#1 v1.5 or PSS encoding checked
 * (RFC 8017, 8.2.2 and 9.1.2), ECDSA as `u1·G + u2·Q` (SEC 1, 4.1.4) on P-256 and P-384. The
 * tests check both paths against each other and against openssl and WebCrypto.
 *
 * Every malformed signature (bad length, bad DER, an integer out of range) is invalid, not an
 * error.
 *
 * A little over 400 lines: the RSA and the ECDSA digest verifiers share the big-integer helpers at
 * the bottom, which apart would be written twice.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { ALGORITHMS, type HashName, KEY_SPECS, type KeySpec, type SigningAlgorithmName } from "../core/algorithms.ts";
import { jwkParameters } from "./jose.ts";

/** What {@linkcode verifySignature} checks. */
export interface VerifyInput {
  /** SubjectPublicKeyInfo DER. */
  publicKey: Uint8Array;
  keySpec: KeySpec;
  algorithm: SigningAlgorithmName;
  /** DIGEST: `message` is the digest. RAW: the whole message. */
  messageType: "DIGEST" | "RAW";
  message: Uint8Array;
  signature: Uint8Array;
  /** ECDSA only: DER (default) or fixed-width `r || s`. */
  signatureFormat?: "DER" | "RAW";
}

type Bytes = Uint8Array<ArrayBuffer>;

const WEBCRYPTO_HASH: Partial<Record<HashName, string>> = { SHA_256: "SHA-256", SHA_384: "SHA-384", SHA_512: "SHA-512" };
const NODE_HASH: Partial<Record<HashName, string>> = { SHA_256: "sha256", SHA_384: "sha384", SHA_512: "sha512" };

/** The DER DigestInfo before the digest, for PKCS#1 v1.5 (RFC 8017, 9.2, note 1). */
const DIGEST_INFO_PREFIX: Partial<Record<HashName, string>> = {
  SHA_256: "3031300d060960864801650304020105000420",
  SHA_384: "3041300d060960864801650304020205000430",
  SHA_512: "3051300d060960864801650304020305000440",
};

/**
 * Whether `signature` is a valid signature of `message` under the public key. The algorithm must
 * be one of the key's family (the caller checks, to answer 400); if not, the answer is `false`.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync, sign } from "node:crypto";
 * import { verifySignature } from "./verify.ts";
 *
 * const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
 * const message = new TextEncoder().encode("hello");
 * const valid = await verifySignature({
 *   publicKey: new Uint8Array(publicKey.export({ type: "spki", format: "der" })),
 *   keySpec: "ECC_NIST_P256",
 *   algorithm: "ECDSA_SHA_256",
 *   messageType: "RAW",
 *   message,
 *   signature: new Uint8Array(sign("sha256", message, privateKey)), // DER
 * }); // true
 * ```
 */
export async function verifySignature(input: VerifyInput): Promise<boolean> {
  const algorithm = ALGORITHMS[input.algorithm];
  const family = KEY_SPECS[input.keySpec].family;
  if (algorithm.family !== family) return false;
  const hash = algorithm.hash;
  if (input.messageType === "DIGEST" && input.message.length !== algorithm.digestBytes) return false;
  if (family === "EC") {
    const curve = CURVES[input.keySpec as EcKeySpec];
    const raw = input.signatureFormat === "RAW" ? input.signature : derToRaw(input.signature, curve.bytes);
    if (raw === undefined || raw.length !== 2 * curve.bytes) return false;
    if (input.messageType === "DIGEST") return ecdsaVerifyDigest(curve, input.publicKey, input.message, raw);
    return await webCryptoVerify(
      input.publicKey,
      { name: "ECDSA", namedCurve: curve.name },
      { name: "ECDSA", hash: WEBCRYPTO_HASH[hash]! },
      raw,
      input.message,
    );
  }
  const pss = input.algorithm.startsWith("RSASSA_PSS");
  if (input.messageType === "DIGEST") return rsaVerifyDigest(input.publicKey, hash, pss, input.message, input.signature);
  const name = pss ? "RSA-PSS" : "RSASSA-PKCS1-v1_5";
  return await webCryptoVerify(
    input.publicKey,
    { name, hash: WEBCRYPTO_HASH[hash]! },
    { name, saltLength: algorithm.digestBytes },
    input.signature,
    input.message,
  );
}

async function webCryptoVerify(
  spki: Uint8Array,
  importAlgorithm: RsaHashedImportParams | EcKeyImportParams,
  verifyAlgorithm: RsaPssParams | EcdsaParams | Algorithm,
  signature: Uint8Array,
  message: Uint8Array,
): Promise<boolean> {
  const key = await crypto.subtle.importKey("spki", copy(spki), importAlgorithm, false, ["verify"]);
  try {
    return await crypto.subtle.verify(verifyAlgorithm, key, copy(signature), copy(message));
  } catch {
    // A signature WebCrypto cannot even read (an RSA signature of the wrong length) is invalid.
    return false;
  }
}

/** The bytes over a plain ArrayBuffer of their own, as WebCrypto takes them. */
function copy(bytes: Uint8Array): Bytes {
  return new Uint8Array(bytes);
}

// ---- RSA over a digest --------------------------------------------------------------------

function rsaVerifyDigest(spki: Uint8Array, hash: HashName, pss: boolean, digest: Uint8Array, signature: Uint8Array): boolean {
  const jwk = jwkParameters(spki);
  const n = toBigInt(Uint8Array.fromBase64(jwk.n!, { alphabet: "base64url" }));
  const e = toBigInt(Uint8Array.fromBase64(jwk.e!, { alphabet: "base64url" }));
  const modBits = n.toString(2).length;
  const k = Math.ceil(modBits / 8);
  if (signature.length !== k) return false;
  const s = toBigInt(signature);
  if (s >= n) return false;
  const em = toBytes(modPow(s, e, n), k);
  return pss ? emsaPssVerify(hash, digest, em, modBits - 1) : equal(em, emsaPkcs1v15(hash, digest, k));
}

/** EMSA-PKCS1-v1_5 (RFC 8017, 9.2) of a digest: `00 01 FF.. 00 DigestInfo`. */
function emsaPkcs1v15(hash: HashName, digest: Uint8Array, k: number): Uint8Array {
  const t = new Uint8Array([...Uint8Array.fromHex(DIGEST_INFO_PREFIX[hash]!), ...digest]);
  const em = new Uint8Array(k).fill(0xff);
  em[0] = 0;
  em[1] = 1;
  em[k - t.length - 1] = 0;
  em.set(t, k - t.length);
  return em;
}

/** EMSA-PSS-VERIFY (RFC 8017, 9.1.2) with MGF1 of the same hash and a salt of the hash's length. */
function emsaPssVerify(hash: HashName, mHash: Uint8Array, encoded: Uint8Array, emBits: number): boolean {
  const emLen = Math.ceil(emBits / 8);
  // I2OSP gave k bytes; when emBits is a multiple of 8 the first one must be 0 and is dropped.
  if (encoded.length > emLen && encoded[0] !== 0) return false;
  const em = encoded.subarray(encoded.length - emLen);
  const hLen = mHash.length;
  const sLen = hLen;
  if (emLen < hLen + sLen + 2 || em[emLen - 1] !== 0xbc) return false;
  const maskedDb = em.subarray(0, emLen - hLen - 1);
  const h = em.subarray(emLen - hLen - 1, emLen - 1);
  const topBits = 8 * emLen - emBits;
  const topMask = 0xff >> topBits;
  if ((maskedDb[0] & ~topMask) !== 0) return false;
  const db = mgf1(hash, h, maskedDb.length).map((b, i) => b ^ maskedDb[i]);
  db[0] &= topMask;
  const separator = emLen - hLen - sLen - 2;
  for (let i = 0; i < separator; i++) if (db[i] !== 0) return false;
  if (db[separator] !== 1) return false;
  const salt = db.subarray(db.length - sLen);
  const mPrime = new Uint8Array([...new Uint8Array(8), ...mHash, ...salt]);
  return equal(h, digestOf(hash, mPrime));
}

function mgf1(hash: HashName, seed: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let counter = 0, at = 0; at < length; counter++) {
    const block = digestOf(
      hash,
      new Uint8Array([...seed, counter >>> 24, (counter >>> 16) & 0xff, (counter >>> 8) & 0xff, counter & 0xff]),
    );
    out.set(block.subarray(0, Math.min(block.length, length - at)), at);
    at += block.length;
  }
  return out;
}

function digestOf(hash: HashName, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash(NODE_HASH[hash]!).update(data).digest());
}

// ---- ECDSA over a digest ------------------------------------------------------------------

type EcKeySpec = "ECC_NIST_P256" | "ECC_NIST_P384";

/** A short Weierstrass curve with a = -3. */
interface Curve {
  name: "P-256" | "P-384";
  /** Bytes of a field element and of a scalar. */
  bytes: number;
  p: bigint;
  n: bigint;
  b: bigint;
  g: Affine;
}

interface Affine {
  x: bigint;
  y: bigint;
}

/** Jacobian coordinates: (X / Z², Y / Z³); Z = 0 is the point at infinity. */
interface Jacobian {
  x: bigint;
  y: bigint;
  z: bigint;
}

/** The NIST curves' domain parameters (SEC 2, 2.4.2 and 2.5.1; FIPS 186-4, D.1.2). */
const CURVES: Record<EcKeySpec, Curve> = {
  ECC_NIST_P256: {
    name: "P-256",
    bytes: 32,
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    b: 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn,
    g: {
      x: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
      y: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
    },
  },
  ECC_NIST_P384: {
    name: "P-384",
    bytes: 48,
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    b: 0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aefn,
    g: {
      x: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
      y: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
    },
  },
};

/** ECDSA verification of a digest (SEC 1, 4.1.4) with a `r || s` signature. */
function ecdsaVerifyDigest(curve: Curve, spki: Uint8Array, digest: Uint8Array, raw: Uint8Array): boolean {
  const q = ecPublicPoint(spki);
  if (q === undefined || !onCurve(curve, q)) return false;
  const r = toBigInt(raw.subarray(0, curve.bytes));
  const s = toBigInt(raw.subarray(curve.bytes));
  const { n } = curve;
  if (r < 1n || r >= n || s < 1n || s >= n) return false;
  // The digest's leftmost bits, as many as n has.
  const nBits = n.toString(2).length;
  let e = toBigInt(digest);
  if (digest.length * 8 > nBits) e >>= BigInt(digest.length * 8 - nBits);
  const w = modPow(s, n - 2n, n);
  const u1 = (e * w) % n;
  const u2 = (r * w) % n;
  const point = toAffine(curve, shamir(curve, u1, u2, q));
  return point !== undefined && point.x % n === r;
}

function ecPublicPoint(spki: Uint8Array): Affine | undefined {
  const jwk = jwkParameters(spki);
  if (jwk.x === undefined || jwk.y === undefined) return undefined;
  return {
    x: toBigInt(Uint8Array.fromBase64(jwk.x, { alphabet: "base64url" })),
    y: toBigInt(Uint8Array.fromBase64(jwk.y, { alphabet: "base64url" })),
  };
}

function onCurve({ p, b }: Curve, { x, y }: Affine): boolean {
  if (x >= p || y >= p) return false;
  return mod(y * y - (x * x * x - 3n * x + b), p) === 0n;
}

/** `u1·G + u2·Q` in one pass over the bits (Shamir's trick). */
function shamir(curve: Curve, u1: bigint, u2: bigint, q: Affine): Jacobian {
  const g = jacobian(curve.g);
  const qj = jacobian(q);
  const gq = add(curve, g, qj);
  let acc: Jacobian = { x: 1n, y: 1n, z: 0n };
  const bits = Math.max(u1.toString(2).length, u2.toString(2).length);
  for (let i = bits - 1; i >= 0; i--) {
    acc = double(curve, acc);
    const b1 = (u1 >> BigInt(i)) & 1n;
    const b2 = (u2 >> BigInt(i)) & 1n;
    if (b1 && b2) acc = add(curve, acc, gq);
    else if (b1) acc = add(curve, acc, g);
    else if (b2) acc = add(curve, acc, qj);
  }
  return acc;
}

function jacobian({ x, y }: Affine): Jacobian {
  return { x, y, z: 1n };
}

function toAffine({ p }: Curve, { x, y, z }: Jacobian): Affine | undefined {
  if (z === 0n) return undefined;
  const zInv = modPow(z, p - 2n, p);
  const zInv2 = (zInv * zInv) % p;
  return { x: (x * zInv2) % p, y: (y * zInv2 * zInv) % p };
}

/** Point doubling for a = -3 ("dbl-2001-b"). */
function double({ p }: Curve, { x, y, z }: Jacobian): Jacobian {
  if (z === 0n || y === 0n) return { x: 1n, y: 1n, z: 0n };
  const delta = (z * z) % p;
  const gamma = (y * y) % p;
  const beta = (x * gamma) % p;
  const alpha = mod(3n * (x - delta) * (x + delta), p);
  const x3 = mod(alpha * alpha - 8n * beta, p);
  const z3 = mod((y + z) * (y + z) - gamma - delta, p);
  const y3 = mod(alpha * (4n * beta - x3) - 8n * gamma * gamma, p);
  return { x: x3, y: y3, z: z3 };
}

/** Point addition ("add-1998-cmo-2"), with the doubling and inverse cases. */
function add(curve: Curve, a: Jacobian, b: Jacobian): Jacobian {
  const { p } = curve;
  if (a.z === 0n) return b;
  if (b.z === 0n) return a;
  const z1z1 = (a.z * a.z) % p;
  const z2z2 = (b.z * b.z) % p;
  const u1 = (a.x * z2z2) % p;
  const u2 = (b.x * z1z1) % p;
  const s1 = (a.y * b.z * z2z2) % p;
  const s2 = (b.y * a.z * z1z1) % p;
  const h = mod(u2 - u1, p);
  const r = mod(s2 - s1, p);
  if (h === 0n) return r === 0n ? double(curve, a) : { x: 1n, y: 1n, z: 0n };
  const hh = (h * h) % p;
  const hhh = (h * hh) % p;
  const v = (u1 * hh) % p;
  const x3 = mod(r * r - hhh - 2n * v, p);
  const y3 = mod(r * (v - x3) - s1 * hhh, p);
  const z3 = (a.z * b.z * h) % p;
  return { x: x3, y: y3, z: z3 };
}

// ---- shared ---------------------------------------------------------------------------------

/**
 * A DER ECDSA-Sig-Value (`SEQUENCE { INTEGER r, INTEGER s }`) as fixed-width `r || s`, `width`
 * bytes each; `undefined` for anything but the one strict DER encoding of two positive integers
 * that fit.
 *
 * @example
 * ```ts
 * import { derToRaw } from "./verify.ts";
 *
 * derToRaw(Uint8Array.of(0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02), 2); // [0, 1, 0, 2]
 * derToRaw(Uint8Array.of(0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x02), 2); // undefined: not minimal
 * ```
 */
export function derToRaw(der: Uint8Array, width: number): Uint8Array | undefined {
  if (der.length < 2 || der[0] !== 0x30) return undefined;
  let at = 2;
  let length = der[1];
  if (length === 0x81) {
    if (der.length < 3 || der[2] < 0x80) return undefined;
    length = der[2];
    at = 3;
  } else if (length & 0x80) {
    return undefined;
  }
  if (at + length !== der.length) return undefined;
  const out = new Uint8Array(2 * width);
  for (let i = 0; i < 2; i++) {
    if (at + 2 > der.length || der[at] !== 0x02) return undefined;
    const size = der[at + 1];
    const value = der.subarray(at + 2, at + 2 + size);
    if (size === 0 || size & 0x80 || value.length !== size) return undefined;
    // Positive, and minimal: a leading zero only before a byte whose top bit is set.
    if (value[0] & 0x80 || (value[0] === 0 && (size === 1 || !(value[1] & 0x80)))) return undefined;
    const digits = value[0] === 0 ? value.subarray(1) : value;
    if (digits.length > width) return undefined;
    out.set(digits, (i + 1) * width - digits.length);
    at += 2 + size;
  }
  return at === der.length ? out : undefined;
}

function toBigInt(bytes: Uint8Array): bigint {
  return bytes.length === 0 ? 0n : BigInt(`0x${bytes.toHex()}`);
}

function toBytes(value: bigint, length: number): Uint8Array {
  return Uint8Array.fromHex(value.toString(16).padStart(2 * length, "0"));
}

function mod(a: bigint, m: bigint): bigint {
  const r = a % m;
  return r < 0n ? r + m : r;
}

function modPow(base: bigint, exponent: bigint, m: bigint): bigint {
  let result = 1n;
  let b = mod(base, m);
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % m;
    b = (b * b) % m;
  }
  return result;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
