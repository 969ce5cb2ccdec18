/**
 * Test fixtures: private keys made by the openssl CLI, and verifiers that share no code with
 * keycell (the openssl CLI and WebCrypto).
 *
 * @module
 */

import type { KeySpec } from "../src/core/protocol.ts";

/** A key file written by openssl, with what an independent tool says about it. */
export interface FixtureKey {
  keySpec: KeySpec;
  /** PKCS#8 PEM private key path. */
  path: string;
  /** SPKI PEM public key path. */
  publicPath: string;
  /** SPKI DER. */
  spki: Uint8Array<ArrayBuffer>;
  /** sha256(SPKI DER), lowercase hex. */
  id: string;
}

const GENKEY_ARGS: Record<KeySpec, string[]> = {
  RSA_2048: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
  RSA_3072: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
  RSA_4096: ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
  ECC_NIST_P256: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
  ECC_NIST_P384: ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
};

/** Every key spec keycell supports. */
export const ALL_SPECS = Object.keys(GENKEY_ARGS) as KeySpec[];

/**
 * Runs openssl and returns its stdout; throws with its stderr when it fails.
 *
 * @example
 * ```ts
 * const der = await openssl(["pkey", "-in", path, "-pubout", "-outform", "DER"]);
 * ```
 */
export async function openssl(args: string[], stdin?: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const child = new Deno.Command("openssl", {
    args,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(stdin);
    await writer.close();
  }
  const out = await child.output();
  if (!out.success) throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return out.stdout;
}

/**
 * Whether openssl accepts a command (exit status 0).
 *
 * @example
 * ```ts
 * assert(await opensslSucceeds(["pkeyutl", "-verify", ...]));
 * ```
 */
export async function opensslSucceeds(args: string[]): Promise<boolean> {
  const out = await new Deno.Command("openssl", { args, stdout: "null", stderr: "null" }).output();
  return out.success;
}

/**
 * Generates one key per spec under `root`: PKCS#8 PEM private keys in `root/keys` (a key
 * directory keycell can load) and their public keys in `root/public`.
 *
 * @example
 * ```ts
 * const keys = await makeKeys(await Deno.makeTempDir(), ["ECC_NIST_P256"]);
 * ```
 */
export async function makeKeys(root: string, specs: KeySpec[] = ALL_SPECS): Promise<FixtureKey[]> {
  await Deno.mkdir(`${root}/keys`, { recursive: true });
  await Deno.mkdir(`${root}/public`, { recursive: true });
  return await Promise.all(specs.map(async (keySpec) => {
    const path = `${root}/keys/${keySpec}.pem`;
    const publicPath = `${root}/public/${keySpec}.pem`;
    await openssl(["genpkey", ...GENKEY_ARGS[keySpec], "-out", path]);
    await openssl(["pkey", "-in", path, "-pubout", "-out", publicPath]);
    const spki = await openssl(["pkey", "-in", path, "-pubout", "-outform", "DER"]);
    const id = new Uint8Array(await crypto.subtle.digest("SHA-256", spki)).toHex();
    return { keySpec, path, publicPath, spki, id };
  }));
}

/** openssl's digest names, by keycell hash. */
export const OPENSSL_DIGEST = { "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512" } as const;

/** The hash and scheme of each HTTP signing algorithm, as an independent verifier needs them. */
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

/**
 * The algorithms valid for a spec.
 *
 * @example
 * ```ts
 * algorithmsFor("ECC_NIST_P256"); // ["ECDSA_SHA_256", "ECDSA_SHA_384", "ECDSA_SHA_512"]
 * ```
 */
export function algorithmsFor(keySpec: KeySpec): AlgorithmName[] {
  const scheme = keySpec.startsWith("RSA") ? ["PKCS1", "PSS"] : ["ECDSA"];
  return (Object.keys(ALGORITHM_DETAILS) as AlgorithmName[])
    .filter((a) => (scheme as string[]).includes(ALGORITHM_DETAILS[a].scheme));
}

/**
 * Digest of `message` with the algorithm's hash.
 *
 * @example
 * ```ts
 * const digest = await digestFor("ECDSA_SHA_256", message);
 * ```
 */
export async function digestFor(algorithm: AlgorithmName, message: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await crypto.subtle.digest(ALGORITHM_DETAILS[algorithm].hash, message));
}

/**
 * Checks a signature over a digest with the openssl CLI. PKCS#1 v1.5 is compared byte for byte
 * with openssl's own signature (the scheme is deterministic); PSS and DER ECDSA are verified.
 * Returns a description of what failed, or `undefined` when openssl agrees.
 *
 * @example
 * ```ts
 * assertEquals(await opensslCheck(key, "RSASSA_PSS_SHA_256", digest, signature), undefined);
 * ```
 */
export async function opensslCheck(
  key: FixtureKey,
  algorithm: AlgorithmName,
  digest: Uint8Array<ArrayBuffer>,
  signature: Uint8Array<ArrayBuffer>,
): Promise<string | undefined> {
  const { scheme, hash } = ALGORITHM_DETAILS[algorithm];
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/digest`, digest);
    await Deno.writeFile(`${dir}/sig`, signature);
    const md = ["-pkeyopt", `digest:${OPENSSL_DIGEST[hash]}`];
    if (scheme === "PKCS1") {
      const expected = await openssl(["pkeyutl", "-sign", "-inkey", key.path, ...md, "-in", `${dir}/digest`]);
      return expected.toHex() === signature.toHex() ? undefined : "differs from openssl pkeyutl -sign";
    }
    const pss = scheme === "PSS" ? ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest"] : [];
    const args = ["pkeyutl", "-verify", "-pubin", "-inkey", key.publicPath, ...md, ...pss, "-in", `${dir}/digest`, "-sigfile", `${dir}/sig`];
    return (await opensslSucceeds(args)) ? undefined : "openssl pkeyutl -verify rejected it";
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Verifies a signature over a whole message with WebCrypto. ECDSA signatures must be `r || s`.
 *
 * @example
 * ```ts
 * assert(await webCryptoVerify(key, "ECDSA_SHA_256", message, rawSignature));
 * ```
 */
export async function webCryptoVerify(
  key: FixtureKey,
  algorithm: AlgorithmName,
  message: Uint8Array<ArrayBuffer>,
  signature: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  const { scheme, hash } = ALGORITHM_DETAILS[algorithm];
  if (scheme === "ECDSA") {
    const namedCurve = key.keySpec === "ECC_NIST_P256" ? "P-256" : "P-384";
    const pub = await crypto.subtle.importKey("spki", key.spki, { name: "ECDSA", namedCurve }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "ECDSA", hash }, pub, signature, message);
  }
  const name = scheme === "PSS" ? "RSA-PSS" : "RSASSA-PKCS1-v1_5";
  const pub = await crypto.subtle.importKey("spki", key.spki, { name, hash }, false, ["verify"]);
  const saltLength = { "SHA-256": 32, "SHA-384": 48, "SHA-512": 64 }[hash];
  return await crypto.subtle.verify({ name, saltLength }, pub, signature, message);
}

/**
 * The PKCS#8 DER inside a key file's PEM body (openssl's `pkey -outform DER` would give PKCS#1 for
 * RSA keys).
 *
 * @example
 * ```ts
 * const der = await pkcs8Of(key.path);
 * ```
 */
export async function pkcs8Of(path: string): Promise<Uint8Array<ArrayBuffer>> {
  const pem = await Deno.readTextFile(path);
  return Uint8Array.fromBase64(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
}

/**
 * Converts a DER ECDSA-Sig-Value to the fixed-width `r || s` WebCrypto verifies, `width` bytes each.
 * Throws on anything that is not two INTEGERs in a SEQUENCE.
 *
 * @example
 * ```ts
 * await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, ecdsaDerToRaw(der, 32), message);
 * ```
 */
export function ecdsaDerToRaw(der: Uint8Array, width: number): Uint8Array<ArrayBuffer> {
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
