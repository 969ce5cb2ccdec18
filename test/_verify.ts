/**
 * Checks keycell's signatures with verifiers that share no code with it: the openssl CLI and
 * WebCrypto. Nothing here imports keycell, so the guest ABI test can use it too.
 *
 * @module
 */

/** Byte arrays over a plain ArrayBuffer, as WebCrypto requires. */
type Bytes = Uint8Array<ArrayBuffer>;

/** A signature scheme. */
export type Scheme = "pkcs1" | "pss" | "ecdsa";

/** A hash, as openssl names it; `md5-sha1` is TLS 1.0's concatenation of the two. */
export type Hash = "sha1" | "sha224" | "sha256" | "sha384" | "sha512" | "md5-sha1";

/** Digest length of each hash, which is also the PSS salt length keycell uses. */
export const HASH_BYTES: Record<Hash, number> = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, "md5-sha1": 36 };

const WEBCRYPTO_HASH: Partial<Record<Hash, string>> = { sha1: "SHA-1", sha256: "SHA-256", sha384: "SHA-384", sha512: "SHA-512" };

/** The scheme and hash of each HTTP signing algorithm, named as WebCrypto names them. */
export const ALGORITHM_DETAILS = {
  RSASSA_PKCS1_V1_5_SHA_256: { scheme: "PKCS1", hash: "SHA-256" },
  RSASSA_PKCS1_V1_5_SHA_384: { scheme: "PKCS1", hash: "SHA-384" },
  RSASSA_PKCS1_V1_5_SHA_512: { scheme: "PKCS1", hash: "SHA-512" },
  RSASSA_PSS_SHA_256: { scheme: "PSS", hash: "SHA-256" },
  RSASSA_PSS_SHA_384: { scheme: "PSS", hash: "SHA-384" },
  RSASSA_PSS_SHA_512: { scheme: "PSS", hash: "SHA-512" },
  ECDSA_SHA_256: { scheme: "ECDSA", hash: "SHA-256" },
  ECDSA_SHA_384: { scheme: "ECDSA", hash: "SHA-384" },
  ECDSA_SHA_512: { scheme: "ECDSA", hash: "SHA-512" },
} as const;

/** An HTTP signing algorithm name. */
export type AlgorithmName = keyof typeof ALGORITHM_DETAILS;

/** An HTTP algorithm's scheme and hash in the names of {@linkcode Scheme} and {@linkcode Hash}. */
function checkOf(algorithm: AlgorithmName): { scheme: Scheme; hash: Hash } {
  const { scheme, hash } = ALGORITHM_DETAILS[algorithm];
  return { scheme: scheme.toLowerCase() as Scheme, hash: hash.replace("-", "").toLowerCase() as Hash };
}

/**
 * The HTTP algorithms valid for a key spec.
 *
 * @example
 * ```ts
 * import { algorithmsFor } from "./_verify.ts";
 *
 * algorithmsFor("ECC_NIST_P256"); // ["ECDSA_SHA_256", "ECDSA_SHA_384", "ECDSA_SHA_512"]
 * ```
 */
export function algorithmsFor(keySpec: string): AlgorithmName[] {
  const schemes: string[] = keySpec.startsWith("RSA") ? ["PKCS1", "PSS"] : ["ECDSA"];
  return (Object.keys(ALGORITHM_DETAILS) as AlgorithmName[]).filter((a) => schemes.includes(ALGORITHM_DETAILS[a].scheme));
}

/**
 * Digest of `message` with an HTTP algorithm's hash, by WebCrypto.
 *
 * @example
 * ```ts
 * import { digestFor } from "./_verify.ts";
 *
 * (await digestFor("ECDSA_SHA_384", new Uint8Array(10))).length; // 48
 * ```
 */
export async function digestFor(algorithm: AlgorithmName, message: Bytes): Promise<Bytes> {
  return new Uint8Array(await crypto.subtle.digest(ALGORITHM_DETAILS[algorithm].hash, message));
}

/**
 * Verifies a signature over a digest with `openssl pkeyutl -verify`. ECDSA signatures are DER;
 * openssl takes the input as the digest whatever its length, as the guest does. PSS uses a salt
 * of the hash length unless `saltLength` says otherwise.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync, sign } from "node:crypto";
 * import { opensslVerify } from "./_verify.ts";
 *
 * const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
 * const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
 * const message = new TextEncoder().encode("hello");
 * const signature = new Uint8Array(sign("sha256", message, privateKey)); // DER
 * const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", message));
 * await opensslVerify(spki, { scheme: "ecdsa", hash: "sha256" }, digest, signature); // true
 * ```
 */
export async function opensslVerify(
  spki: Uint8Array,
  check: { scheme: Scheme; hash: Hash },
  digest: Uint8Array,
  signature: Uint8Array,
  options: { saltLength?: number } = {},
): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "keycell-verify-" });
  try {
    await Deno.writeFile(`${dir}/spki.der`, spki);
    await Deno.writeFile(`${dir}/digest`, digest);
    await Deno.writeFile(`${dir}/sig`, signature);
    const args = ["pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey", `${dir}/spki.der`, "-in", `${dir}/digest`, "-sigfile", `${dir}/sig`];
    if (check.scheme !== "ecdsa") args.push("-pkeyopt", `digest:${check.hash}`);
    if (check.scheme === "pss") {
      args.push("-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", `rsa_pss_saltlen:${options.saltLength ?? HASH_BYTES[check.hash]}`);
    }
    const out = await new Deno.Command("openssl", { args, stdin: "null", stdout: "piped", stderr: "null" }).output();
    return out.success && new TextDecoder().decode(out.stdout).includes("Signature Verified Successfully");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * The signature `openssl pkeyutl -sign` makes over a digest with a private key file, or
 * `undefined` when openssl cannot make one (no DigestInfo for `md5-sha1`, for one). For schemes
 * that are deterministic (PKCS#1 v1.5), keycell's signature must equal it byte for byte.
 *
 * @example
 * ```ts
 * import { opensslSign } from "./_verify.ts";
 *
 * async function sameAsOpenssl(keyPath: string, digest: Uint8Array, signature: Uint8Array): Promise<boolean> {
 *   return (await opensslSign(keyPath, "sha256", digest))?.toHex() === signature.toHex();
 * }
 * ```
 */
export async function opensslSign(keyPath: string, hash: Hash | undefined, digest: Uint8Array): Promise<Bytes | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "keycell-verify-" });
  try {
    await Deno.writeFile(`${dir}/digest`, digest);
    const args = ["pkeyutl", "-sign", "-inkey", keyPath, "-in", `${dir}/digest`, ...hash ? ["-pkeyopt", `digest:${hash}`] : []];
    const out = await new Deno.Command("openssl", { args, stdin: "null", stdout: "piped", stderr: "null" }).output();
    return out.success ? out.stdout : undefined;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const P256_OID = Uint8Array.of(0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07);
const P384_OID = Uint8Array.of(0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22);

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  for (let i = 0; i + needle.length <= haystack.length; i++) {
    if (needle.every((b, j) => haystack[i + j] === b)) return true;
  }
  return false;
}

/**
 * Verifies a signature over a whole message with WebCrypto; ECDSA signatures must be `r || s`.
 * `"unsupported"` when WebCrypto cannot judge: a hash it lacks (SHA-224, MD5+SHA-1) or a
 * combination it refuses.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync, sign } from "node:crypto";
 * import { webCryptoCheck } from "./_verify.ts";
 *
 * const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
 * const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
 * const message = new TextEncoder().encode("hello");
 * const signature = new Uint8Array(sign("sha256", message, { key: privateKey, dsaEncoding: "ieee-p1363" }));
 * await webCryptoCheck(spki, { scheme: "ecdsa", hash: "sha256" }, message, signature); // true
 * ```
 */
export async function webCryptoCheck(
  spki: Uint8Array,
  check: { scheme: Scheme; hash: Hash },
  message: Uint8Array,
  signature: Uint8Array,
): Promise<boolean | "unsupported"> {
  const hash = WEBCRYPTO_HASH[check.hash];
  if (hash === undefined) return "unsupported";
  const [spkiBytes, messageBytes, signatureBytes] = [spki, message, signature].map((b) => new Uint8Array(b));
  try {
    if (check.scheme === "ecdsa") {
      const namedCurve = contains(spkiBytes, P256_OID) ? "P-256" : contains(spkiBytes, P384_OID) ? "P-384" : "P-521";
      const key = await crypto.subtle.importKey("spki", spkiBytes, { name: "ECDSA", namedCurve }, false, ["verify"]);
      return await crypto.subtle.verify({ name: "ECDSA", hash }, key, signatureBytes, messageBytes);
    }
    const name = check.scheme === "pss" ? "RSA-PSS" : "RSASSA-PKCS1-v1_5";
    const key = await crypto.subtle.importKey("spki", spkiBytes, { name, hash }, false, ["verify"]);
    return await crypto.subtle.verify({ name, saltLength: HASH_BYTES[check.hash] }, key, signatureBytes, messageBytes);
  } catch (err) {
    if (err instanceof DOMException && err.name === "NotSupportedError") return "unsupported";
    throw err;
  }
}

/**
 * Whether WebCrypto accepts a signature over a whole message with an HTTP signing algorithm
 * (all of which it supports). ECDSA signatures must be `r || s`.
 *
 * @example
 * ```ts
 * import { webCryptoVerify } from "./_verify.ts";
 *
 * async function check(key: { spki: Uint8Array }, message: Uint8Array, rawSignature: Uint8Array): Promise<boolean> {
 *   return await webCryptoVerify(key, "ECDSA_SHA_256", message, rawSignature);
 * }
 * ```
 */
export async function webCryptoVerify(
  key: { spki: Uint8Array },
  algorithm: AlgorithmName,
  message: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  return (await webCryptoCheck(key.spki, checkOf(algorithm), message, signature)) === true;
}

/**
 * Checks a signature over a digest with the openssl CLI: PKCS#1 v1.5 is compared byte for byte
 * with openssl's own signature (the scheme is deterministic), PSS and DER ECDSA are verified.
 * Returns what failed, or `undefined` when openssl agrees.
 *
 * @example
 * ```ts
 * import { opensslCheck } from "./_verify.ts";
 *
 * async function agrees(key: { path: string; spki: Uint8Array }, digest: Uint8Array, signature: Uint8Array): Promise<boolean> {
 *   return (await opensslCheck(key, "RSASSA_PSS_SHA_256", digest, signature)) === undefined;
 * }
 * ```
 */
export async function opensslCheck(
  key: { path: string; spki: Uint8Array },
  algorithm: AlgorithmName,
  digest: Uint8Array,
  signature: Uint8Array,
): Promise<string | undefined> {
  const check = checkOf(algorithm);
  if (check.scheme === "pkcs1") {
    const expected = await opensslSign(key.path, check.hash, digest);
    return expected?.toHex() === signature.toHex() ? undefined : "differs from openssl pkeyutl -sign";
  }
  return (await opensslVerify(key.spki, check, digest, signature)) ? undefined : "openssl pkeyutl -verify rejected it";
}

/**
 * Converts a DER ECDSA-Sig-Value to the fixed-width `r || s` WebCrypto verifies, `width` bytes
 * each. Throws on anything that is not two INTEGERs in a SEQUENCE.
 *
 * @example
 * ```ts
 * import { ecdsaDerToRaw } from "./_verify.ts";
 *
 * ecdsaDerToRaw(Uint8Array.of(0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02), 2); // [0, 1, 0, 2]
 * ```
 */
export function ecdsaDerToRaw(der: Uint8Array, width: number): Bytes {
  if (der[0] !== 0x30) throw new Error("not a DER SEQUENCE");
  let at = der[1] & 0x80 ? 2 + (der[1] & 0x7f) : 2;
  const out = new Uint8Array(2 * width);
  for (let i = 0; i < 2; i++) {
    if (der[at] !== 0x02) throw new Error("not a DER INTEGER");
    const length = der[at + 1];
    let value = der.subarray(at + 2, at + 2 + length);
    while (value.length > width && value[0] === 0) value = value.subarray(1);
    out.set(value, (i + 1) * width - value.length);
    at += 2 + length;
  }
  return out;
}

/**
 * Converts a fixed-width `r || s` ECDSA signature to DER, for openssl.
 *
 * @example
 * ```ts
 * import { ecdsaRawToDer } from "./_verify.ts";
 *
 * ecdsaRawToDer(Uint8Array.of(0, 1, 0, 2)); // [0x30, 6, 2, 1, 1, 2, 1, 2]
 * ```
 */
export function ecdsaRawToDer(rs: Uint8Array): Bytes {
  const half = rs.length / 2;
  const integer = (b: Uint8Array): number[] => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    const value = [...b.subarray(i)];
    if (value[0] & 0x80) value.unshift(0);
    return [0x02, value.length, ...value];
  };
  const body = [...integer(rs.subarray(0, half)), ...integer(rs.subarray(half))];
  return Uint8Array.from([0x30, ...body.length < 128 ? [body.length] : [0x81, body.length], ...body]);
}
