/**
 * Test fixtures: private keys made by the openssl CLI. Their signatures are checked with
 * ./_verify.ts.
 *
 * @module
 */

import type { KeySpec } from "../src/core/protocol.ts";

// Where they were before the verifiers had a module of their own; src/host/app_test.ts and
// src/keyless/server_test.ts import them from here.
export {
  ALGORITHM_DETAILS,
  type AlgorithmName,
  algorithmsFor,
  digestFor,
  ecdsaDerToRaw,
  opensslCheck,
  webCryptoVerify,
} from "./_verify.ts";

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
 * import { openssl } from "./_fixtures.ts";
 *
 * const version = new TextDecoder().decode(await openssl(["version"])); // "OpenSSL 3…"
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
 * import { opensslSucceeds } from "./_fixtures.ts";
 *
 * await opensslSucceeds(["version"]); // true
 * await opensslSucceeds(["no-such-command"]); // false
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
 * import { makeKeys } from "./_fixtures.ts";
 * import { tempDir } from "./_temp.ts";
 *
 * const [key] = await makeKeys(await tempDir(), ["ECC_NIST_P256"]);
 * key.id.length; // 64
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

/**
 * The PKCS#8 DER inside a key file's PEM body (openssl's `pkey -outform DER` would give PKCS#1 for
 * RSA keys).
 *
 * @example
 * ```ts
 * import { type FixtureKey, pkcs8Of } from "./_fixtures.ts";
 *
 * async function der(key: FixtureKey): Promise<Uint8Array> {
 *   return await pkcs8Of(key.path);
 * }
 * ```
 */
export async function pkcs8Of(path: string): Promise<Uint8Array<ArrayBuffer>> {
  const pem = await Deno.readTextFile(path);
  return Uint8Array.fromBase64(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
}

/**
 * Makes a test CA and a P-256 server certificate for 127.0.0.1 signed by it (one day), in `dir`:
 * `ca.crt`, `tls.crt`, `tls.key`. Answers their PEM text and the paths of the certificate and key.
 *
 * @example
 * ```ts
 * import { tlsFiles } from "./_fixtures.ts";
 *
 * async function serverTls(dir: string): Promise<Deno.TlsListener> {
 *   const { cert, key } = await tlsFiles(dir);
 *   return Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
 * }
 * ```
 */
export async function tlsFiles(dir: string): Promise<{ cert: string; key: string; ca: string; certPath: string; keyPath: string }> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await openssl(["req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.crt`, "-subj", "/CN=keycell test CA", "-days", "1"]);
  await openssl(["req", ...ec, "-keyout", `${dir}/tls.key`, "-out", `${dir}/tls.csr`, "-subj", "/CN=localhost"]);
  await Deno.writeTextFile(`${dir}/tls.ext`, "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  await openssl([
    "x509", "-req", "-in", `${dir}/tls.csr`, "-CA", `${dir}/ca.crt`, "-CAkey", `${dir}/ca.key`, "-CAcreateserial",
    "-out", `${dir}/tls.crt`, "-days", "1", "-extfile", `${dir}/tls.ext`,
  ]);
  const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
  return { cert: read("tls.crt"), key: read("tls.key"), ca: read("ca.crt"), certPath: `${dir}/tls.crt`, keyPath: `${dir}/tls.key` };
}
