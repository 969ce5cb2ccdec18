/**
 * Wraps a private key for keycell's wrapped import with the openssl CLI only, as an operator's
 * tooling (or Vault Transit's BYOK export) would: RSA-OAEP-SHA-256 over a fresh AES-256 key, then
 * AES key wrap with padding (RFC 5649) over the PKCS#8 DER. No keycell code takes part.
 *
 * @module
 */

import { openssl } from "./_fixtures.ts";

/**
 * Returns the 512-byte OAEP ciphertext followed by the key-wrap output.
 *
 * @example
 * ```ts
 * const wrapped = await wrapForImport(dir, wrappingSpkiDer, "keys/ECC_NIST_P256.pem");
 * ```
 */
export async function wrapForImport(dir: string, wrappingSpki: Uint8Array, keyPath: string): Promise<Uint8Array> {
  const work = await Deno.makeTempDir({ dir });
  try {
    await Deno.writeFile(`${work}/wrapping.der`, wrappingSpki);
    await openssl(["pkey", "-pubin", "-inform", "DER", "-in", `${work}/wrapping.der`, "-out", `${work}/wrapping.pem`]);
    await openssl(["pkcs8", "-topk8", "-nocrypt", "-in", keyPath, "-outform", "DER", "-out", `${work}/key.der`]);
    await openssl(["rand", "-out", `${work}/aes.bin`, "32"]);
    const aesHex = (await Deno.readFile(`${work}/aes.bin`)).toHex();
    const oaep = await openssl([
      "pkeyutl", "-encrypt", "-pubin", "-inkey", `${work}/wrapping.pem`, "-in", `${work}/aes.bin`,
      "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256",
    ]);
    const kwp = await openssl(["enc", "-id-aes256-wrap-pad", "-K", aesHex, "-iv", "A65959A6", "-in", `${work}/key.der`]);
    const out = new Uint8Array(oaep.length + kwp.length);
    out.set(oaep);
    out.set(kwp, oaep.length);
    return out;
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}
