/**
 * What the Keyless suites share: every sign opcode, signed by a key server through a client and
 * checked by openssl (PKCS#1 v1.5 byte for byte) and WebCrypto, whichever engine runs the guest.
 *
 * @module
 */

import { assert } from "./_assert.ts";
import { ecdsaDerToRaw, type FixtureKey, openssl, opensslSucceeds } from "./_fixtures.ts";
import type { KeylessClient } from "../src/keyless/client.ts";
import { Opcode } from "../src/keyless/codec.ts";
import { keylessNames } from "../src/core/key_names.ts";

export type Hash = "md5-sha1" | "sha1" | "sha224" | "sha256" | "sha384" | "sha512";

async function digestOf(hash: Hash, message: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/m`, message);
    const dgst = (md: string) => openssl(["dgst", `-${md}`, "-binary", `${dir}/m`]);
    if (hash === "md5-sha1") return new Uint8Array([...await dgst("md5"), ...await dgst("sha1")]);
    return await dgst(hash);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const OPCODES: [number, "pkcs1" | "pss" | "ecdsa", Hash][] = [
  [Opcode.RSA_SIGN_MD5SHA1, "pkcs1", "md5-sha1"],
  [Opcode.RSA_SIGN_SHA1, "pkcs1", "sha1"],
  [Opcode.RSA_SIGN_SHA224, "pkcs1", "sha224"],
  [Opcode.RSA_SIGN_SHA256, "pkcs1", "sha256"],
  [Opcode.RSA_SIGN_SHA384, "pkcs1", "sha384"],
  [Opcode.RSA_SIGN_SHA512, "pkcs1", "sha512"],
  [Opcode.ECDSA_SIGN_MD5SHA1, "ecdsa", "md5-sha1"],
  [Opcode.ECDSA_SIGN_SHA1, "ecdsa", "sha1"],
  [Opcode.ECDSA_SIGN_SHA224, "ecdsa", "sha224"],
  [Opcode.ECDSA_SIGN_SHA256, "ecdsa", "sha256"],
  [Opcode.ECDSA_SIGN_SHA384, "ecdsa", "sha384"],
  [Opcode.ECDSA_SIGN_SHA512, "ecdsa", "sha512"],
  [Opcode.RSA_PSS_SIGN_SHA256, "pss", "sha256"],
  [Opcode.RSA_PSS_SIGN_SHA384, "pss", "sha384"],
  [Opcode.RSA_PSS_SIGN_SHA512, "pss", "sha512"],
];
const WEBCRYPTO_HASH: Partial<Record<Hash, string>> = { sha1: "SHA-1", sha256: "SHA-256", sha384: "SHA-384", sha512: "SHA-512" };

/** openssl's verdict on a signature over a digest. PKCS#1 v1.5 must match openssl's own byte for byte. */
async function opensslAgrees(key: FixtureKey, scheme: string, hash: Hash, digest: Uint8Array<ArrayBuffer>, sig: Uint8Array<ArrayBuffer>): Promise<boolean> {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/d`, digest);
    await Deno.writeFile(`${dir}/s`, sig);
    if (scheme === "pkcs1") {
      const md = hash === "md5-sha1" ? [] : ["-pkeyopt", `digest:${hash}`];
      const expected = await openssl(["pkeyutl", "-sign", "-inkey", key.path, ...md, "-in", `${dir}/d`]);
      return expected.length === sig.length && expected.every((b, i) => b === sig[i]);
    }
    const extra = scheme === "pss"
      ? ["-pkeyopt", `digest:${hash}`, "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:digest"]
      : [];
    return await opensslSucceeds(["pkeyutl", "-verify", "-pubin", "-inkey", key.publicPath, ...extra, "-in", `${dir}/d`, "-sigfile", `${dir}/s`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** DER ECDSA signature to fixed-width r || s. */
export async function webCryptoAgrees(key: FixtureKey, scheme: string, hash: Hash, message: Uint8Array<ArrayBuffer>, sig: Uint8Array<ArrayBuffer>): Promise<boolean | undefined> {
  const h = WEBCRYPTO_HASH[hash];
  if (h === undefined) return undefined; // WebCrypto has no SHA-224 or MD5+SHA-1
  // Deno 2.9's WebCrypto rejects P-384 with SHA-1 even for openssl's own signatures; openssl checks those.
  if (key.keySpec === "ECC_NIST_P384" && hash === "sha1") return undefined;
  if (scheme === "ecdsa") {
    const namedCurve = key.keySpec === "ECC_NIST_P256" ? "P-256" : "P-384";
    const pub = await crypto.subtle.importKey("spki", key.spki, { name: "ECDSA", namedCurve }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "ECDSA", hash: h }, pub, ecdsaDerToRaw(sig, namedCurve === "P-256" ? 32 : 48), message);
  }
  const name = scheme === "pss" ? "RSA-PSS" : "RSASSA-PKCS1-v1_5";
  const pub = await crypto.subtle.importKey("spki", key.spki, { name, hash: h }, false, ["verify"]);
  return await crypto.subtle.verify({ name, saltLength: { "SHA-256": 32, "SHA-384": 48, "SHA-512": 64 }[h] }, pub, sig, message);
}

const message = new TextEncoder().encode("keyless signs this handshake");

/**
 * Signs with every sign opcode (the RSA key by SKI and by certificate digest, each EC key by SKI)
 * and checks each signature.
 *
 * @example
 * ```ts
 * await signEveryOpcode(client, { rsa, p256, p384 });
 * ```
 */
export async function signEveryOpcode(client: KeylessClient, keys: { rsa: FixtureKey; p256: FixtureKey; p384: FixtureKey }): Promise<void> {
  const { rsa, p256, p384 } = keys;
  for (const [opcode, scheme, hash] of OPCODES) {
    const targets = scheme === "ecdsa" ? [p256, p384] : [rsa];
    for (const key of targets) {
      const digest = await digestOf(hash, message);
      const names = keylessNames(key.spki)!;
      const lookups = key === rsa ? [{ ski: names.ski }, { certificateDigest: names.certificateDigest! }] : [{ ski: names.ski }];
      for (const lookup of lookups) {
        const what = `opcode 0x${opcode.toString(16)} ${key.keySpec} by ${Object.keys(lookup)[0]}`;
        const res = await client.request({ opcode, payload: digest, ...lookup, sni: new TextEncoder().encode("example.com") });
        assert(res.kind === "ok", `${what}: ${JSON.stringify(res)}`);
        const sig = res.payload.slice();
        assert(await opensslAgrees(key, scheme, hash, digest, sig), `${what}: openssl`);
        const web = await webCryptoAgrees(key, scheme, hash, message, sig);
        assert(web !== false, `${what}: WebCrypto`);
      }
    }
  }
}
