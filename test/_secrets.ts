/**
 * A private key's secret parts, as the isolation suite searches for them: every secret component
 * (RSA d, p, q, dP, dQ, qInv; the EC private scalar) in big- and little-endian bytes, hex and
 * base64, and the PEM/PKCS#8 text over those components. Components come from the openssl CLI, so
 * nothing here trusts keycell's own parsing.
 *
 * Binary forms are cut into overlapping 8-byte windows (allocators overwrite chunk heads, so a
 * partial copy must still count); text forms into 16-character windows.
 *
 * @module
 */

import { openssl } from "./_fixtures.ts";
import type { Pattern } from "./_procmem.ts";

/** The secret components of one key, as unsigned big-endian integers. */
export type Components = Record<string, bigint>;

/**
 * Reads a key's secret components with `openssl pkey -text`.
 *
 * @example
 * ```ts
 * const { d, p, q } = await componentsOf("key.pem");
 * ```
 */
export async function componentsOf(path: string): Promise<Components> {
  const text = new TextDecoder().decode(await openssl(["pkey", "-in", path, "-text", "-noout"]));
  const fields: Record<string, string> = {};
  let current: string | undefined;
  for (const line of text.split("\n")) {
    const header = /^([A-Za-z0-9]+):\s*$/.exec(line);
    if (header) {
      current = header[1];
      fields[current] = "";
    } else if (current && /^\s+[0-9a-f:]+$/.test(line)) {
      fields[current] += line.replace(/[\s:]/g, "");
    } else {
      current = undefined;
    }
  }
  const names = "priv" in fields
    ? { priv: "scalar" }
    : { privateExponent: "d", prime1: "p", prime2: "q", exponent1: "dP", exponent2: "dQ", coefficient: "qInv" };
  const out: Components = {};
  for (const [field, name] of Object.entries(names)) {
    if (!fields[field]) throw new Error(`openssl printed no ${field} for ${path}`);
    out[name] = BigInt(`0x${fields[field]}`);
  }
  return out;
}

/**
 * The components of an RSA key from its modulus and one prime: d = e^-1 modulo both φ(n) and
 * λ(n) (libraries differ), the CRT exponents, and both CRT coefficients.
 *
 * @example
 * ```ts
 * const parts = rsaComponentsFromPrime(n, 65537n, p);
 * ```
 */
export function rsaComponentsFromPrime(n: bigint, e: bigint, p: bigint): Components {
  const q = n / p;
  const phi = (p - 1n) * (q - 1n);
  const lambda = phi / gcd(p - 1n, q - 1n);
  const d = modInverse(e, lambda);
  return {
    d,
    dPhi: modInverse(e, phi),
    p,
    q,
    dP: d % (p - 1n),
    dQ: d % (q - 1n),
    qInv: modInverse(q, p),
    pInv: modInverse(p, q),
  };
}

/**
 * Every search window for a key.
 *
 * @param label names the key in hit labels.
 * @param pkcs8Der the key's PKCS#8 DER when it came from a file: its base64 (the PEM body) is
 *   searched over the spans that encode secret components.
 *
 * @example
 * ```ts
 * const patterns = secretPatterns("RSA_2048", await componentsOf(path), der);
 * ```
 */
export function secretPatterns(label: string, components: Components, pkcs8Der?: Uint8Array): Pattern[] {
  const patterns: Pattern[] = [];
  const add = (form: string, name: string, bytes: Uint8Array, width: number) => {
    for (let i = 0; i + width <= bytes.length; i++) {
      patterns.push({ bytes: bytes.slice(i, i + width), label: `${label} ${name} ${form}` });
    }
  };
  const ascii = (s: string) => new TextEncoder().encode(s);
  for (const [name, value] of Object.entries(components)) {
    const be = bigintBytes(value);
    add("be", name, be, 8);
    add("le", name, be.slice().reverse(), 8);
    add("hex", name, ascii(be.toHex()), 16);
    add("hex", name, ascii(be.toHex().toUpperCase()), 16);
    add("base64", name, ascii(be.toBase64()), 16);
    add("base64", name, ascii(be.toBase64({ alphabet: "base64url", omitPadding: true })), 16);
  }
  if (pkcs8Der !== undefined) {
    const secretRanges = Object.values(components)
      .map((v) => bigintBytes(v))
      .map((bytes) => [indexOf(pkcs8Der, bytes), bytes.length])
      .filter(([at]) => at >= 0)
      .map(([at, length]) => [at, at + length]);
    const pem = pkcs8Der.toBase64();
    for (let c = 0; c + 16 <= pem.length; c++) {
      const [from, to] = [Math.floor((c * 3) / 4), Math.ceil(((c + 16) * 3) / 4)];
      if (secretRanges.some(([start, end]) => from >= start && to <= end)) {
        patterns.push({ bytes: ascii(pem.slice(c, c + 16)), label: `${label} pkcs8 pem` });
      }
    }
  }
  return patterns;
}

/** The form part of a hit label (`be`, `le`, `hex`, `base64`, `pem`). */
export function formOf(label: string): string {
  return label.split(" ").at(-1)!;
}

/** The key part of a hit label. */
export function keyOf(label: string): string {
  return label.split(" ")[0];
}

function bigintBytes(value: bigint): Uint8Array {
  const hex = value.toString(16);
  return Uint8Array.fromHex(hex.length % 2 ? `0${hex}` : hex);
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b) [a, b] = [b, a % b];
  return a;
}

function modInverse(a: bigint, m: bigint): bigint {
  let [r0, r1, s0, s1] = [a % m, m, 1n, 0n];
  while (r1) {
    const q = r0 / r1;
    [r0, r1] = [r1, r0 - q * r1];
    [s0, s1] = [s1, s0 - q * s1];
  }
  if (r0 !== 1n) throw new Error("not invertible");
  return ((s0 % m) + m) % m;
}
