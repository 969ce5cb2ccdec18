/**
 * How Keyless SSL clients name keys, computed from public keys only.
 *
 * - SKI (tag 0x04): SHA-1 over the contents of the SubjectPublicKeyInfo's subjectPublicKey BIT
 *   STRING (the EC point, or the DER RSAPublicKey), the same value `openssl x509 -ext
 *   subjectKeyIdentifier` prints for a certificate made from the key.
 * - Certificate digest (tag 0x01, RSA only): SHA-256 over the modulus written as UPPERCASE hex
 *   text with no leading zeros (what `openssl rsa -noout -modulus` prints after `Modulus=`).
 *
 * The SPKI parser here reads public DER the guest returns; it never sees private key bytes.
 *
 * @module
 */

import { hash } from "node:crypto";
import { toHex } from "./protocol.ts";

interface Tlv {
  tag: number;
  start: number;
  end: number;
}

function readTlv(der: Uint8Array, at: number, limit = der.length): Tlv | undefined {
  if (at + 2 > limit) return undefined;
  const tag = der[at];
  let length = der[at + 1];
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 3 || start + count > limit) return undefined;
    length = 0;
    for (let i = 0; i < count; i++) length = (length << 8) | der[start + i];
    start += count;
  }
  const end = start + length;
  return end <= limit ? { tag, start, end } : undefined;
}

/** The parts of a SubjectPublicKeyInfo that key naming needs. */
export interface PublicKeyParts {
  /** The BIT STRING's contents, without its unused-bits byte. */
  subjectPublicKey: Uint8Array;
  /** RSA keys: the modulus, big-endian, without a leading zero byte. */
  rsaModulus?: Uint8Array;
}

const OID_RSA = Uint8Array.of(0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01);

/**
 * Parses SubjectPublicKeyInfo DER; `undefined` when it is not one.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync } from "node:crypto";
 * import { parseSpki } from "./key_names.ts";
 *
 * const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
 * const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
 * const { subjectPublicKey, rsaModulus } = parseSpki(spki)!;
 * subjectPublicKey.length; // 65: the uncompressed EC point
 * rsaModulus; // undefined: not an RSA key
 * ```
 */
export function parseSpki(spki: Uint8Array): PublicKeyParts | undefined {
  const outer = readTlv(spki, 0);
  if (outer?.tag !== 0x30 || outer.end !== spki.length) return undefined;
  const algorithm = readTlv(spki, outer.start, outer.end);
  if (algorithm?.tag !== 0x30) return undefined;
  const oid = readTlv(spki, algorithm.start, algorithm.end);
  if (oid?.tag !== 0x06) return undefined;
  const bits = readTlv(spki, algorithm.end, outer.end);
  if (bits?.tag !== 0x03 || bits.end !== outer.end || bits.end - bits.start < 2 || spki[bits.start] !== 0) return undefined;
  const subjectPublicKey = spki.subarray(bits.start + 1, bits.end);
  const isRsa = oid.end - oid.start === OID_RSA.length && OID_RSA.every((b, i) => spki[oid.start + i] === b);
  if (!isRsa) return { subjectPublicKey };
  const rsaKey = readTlv(subjectPublicKey, 0);
  if (rsaKey?.tag !== 0x30) return undefined;
  const n = readTlv(subjectPublicKey, rsaKey.start, rsaKey.end);
  if (n?.tag !== 0x02) return undefined;
  let start = n.start;
  while (start < n.end - 1 && subjectPublicKey[start] === 0) start++;
  return { subjectPublicKey, rsaModulus: subjectPublicKey.subarray(start, n.end) };
}

/** The Keyless names of one key. */
export interface KeylessNames {
  /** 20 bytes. */
  ski: Uint8Array;
  /** 32 bytes; RSA keys only. */
  certificateDigest?: Uint8Array;
}

/**
 * Computes a key's SKI and, for RSA, its certificate digest.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync } from "node:crypto";
 * import { keylessNames } from "./key_names.ts";
 *
 * const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
 * const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
 * const { ski, certificateDigest } = keylessNames(spki)!;
 * ski.length; // 20
 * certificateDigest?.length; // 32
 * ```
 */
export function keylessNames(spki: Uint8Array): KeylessNames | undefined {
  const parts = parseSpki(spki);
  if (parts === undefined) return undefined;
  const ski = new Uint8Array(hash("sha1", parts.subjectPublicKey, "buffer"));
  if (parts.rsaModulus === undefined) return { ski };
  const hex = toHex(parts.rsaModulus).toUpperCase().replace(/^0+(?=.)/, "");
  return { ski, certificateDigest: new Uint8Array(hash("sha256", hex, "buffer")) };
}

/**
 * The lookup name of an SKI (20 bytes): `s` and its lowercase hex.
 *
 * @example
 * ```ts
 * import { skiName } from "./key_names.ts";
 *
 * skiName(new Uint8Array(20).fill(0xab)); // "sabab…ab"
 * ```
 */
export function skiName(ski: Uint8Array): string {
  return `s${toHex(ski)}`;
}

/**
 * The lookup name of a certificate digest (32 bytes): `d` and its lowercase hex.
 *
 * @example
 * ```ts
 * import { certificateDigestName } from "./key_names.ts";
 *
 * certificateDigestName(new Uint8Array(32)); // "d0000…00"
 * ```
 */
export function certificateDigestName(digest: Uint8Array): string {
  return `d${toHex(digest)}`;
}

/**
 * Every name a Keyless client may find a key by ({@linkcode skiName}, and
 * {@linkcode certificateDigestName} for RSA), for a key store's index; empty for what is no SPKI.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync } from "node:crypto";
 * import { keyNames } from "./key_names.ts";
 *
 * const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
 * keyNames(new Uint8Array(publicKey.export({ type: "spki", format: "der" }))); // ["s1f0e…", "d9a2b…"]
 * keyNames(new Uint8Array([1, 2, 3])); // []
 * ```
 */
export function keyNames(spki: Uint8Array): string[] {
  const names = keylessNames(spki);
  if (names === undefined) return [];
  return names.certificateDigest ? [skiName(names.ski), certificateDigestName(names.certificateDigest)] : [skiName(names.ski)];
}

/**
 * A SubjectPublicKeyInfo as a PEM `PUBLIC KEY` block, 64 characters a line (RFC 7468), no newline
 * after the last line.
 *
 * @example
 * ```ts
 * import { publicKeyPem } from "./key_names.ts";
 *
 * publicKeyPem(new Uint8Array([0x30, 0x00])); // "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----"
 * ```
 */
export function publicKeyPem(spki: Uint8Array): string {
  const lines = spki.toBase64().match(/.{1,64}/g) ?? [];
  return `-----BEGIN PUBLIC KEY-----\n${lines.join("\n")}\n-----END PUBLIC KEY-----`;
}
