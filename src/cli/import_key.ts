/**
 * `keycell import-key`: imports a private key file into a running keycell without the server ever
 * seeing it in plaintext. The key is wrapped here, on the operator's machine, to the guest's
 * RSA-4096 wrapping key (`GET /v1/wrapping-key`), the same way Vault Transit's BYOK import wraps:
 * RSA-OAEP-SHA-256 over a fresh AES-256 key, then AES key wrap with padding (RFC 5649) over the
 * PKCS#8 DER; then it is sent to `POST /v1/keys/import`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { constants, createCipheriv, createPrivateKey, createPublicKey, type KeyObject, publicEncrypt, randomBytes } from "node:crypto";
import type { KeySpec } from "../core/protocol.ts";

/** RFC 5649's alternative initial value. */
const KWP_IV = Uint8Array.fromHex("a65959a6");

/** Where and how to import. */
export interface ImportKeyOptions {
  /** keycell's base URL, e.g. `http://127.0.0.1:8787`. */
  url: string;
  /** An admin token. */
  token: string;
  /** A PEM or DER private key file (PKCS#8, PKCS#1 RSA or SEC1 EC). */
  path: string;
  /** The name (and description) to import the key under; without a name, the key is named by its id. */
  name?: string;
  description?: string;
}

/**
 * Wraps a key file to the server's wrapping key and imports it; resolves with the server's answer.
 *
 * @example
 * ```ts
 * import { importKeyFile } from "./import_key.ts";
 *
 * async function importSiteKey(token: string): Promise<string> {
 *   const key = await importKeyFile({ url: "http://127.0.0.1:8787", token, path: "site.pem" });
 *   return key.id;
 * }
 * ```
 */
export async function importKeyFile(options: ImportKeyOptions): Promise<{ id: string; keySpec: KeySpec; publicKey: string; name?: string }> {
  const headers = { Authorization: `Bearer ${options.token}`, "Content-Type": "application/json" };
  const wrappingRes = await fetch(`${options.url}/v1/wrapping-key`, { headers });
  if (!wrappingRes.ok) throw new Error(`GET /v1/wrapping-key: ${wrappingRes.status} ${await wrappingRes.text()}`);
  const wrappingSpki = Uint8Array.fromBase64((await wrappingRes.json()).publicKey);
  const file = Deno.readFileSync(options.path);
  let key: KeyObject;
  try {
    const text = new TextDecoder().decode(file);
    key = text.includes("-----BEGIN") ? createPrivateKey(text) : createPrivateKey({ key: Buffer.from(file.buffer, file.byteOffset, file.byteLength), format: "der", type: derType(file) });
  } finally {
    file.fill(0);
  }
  const { keySpec, wrappedKey } = wrapKey(key, wrappingSpki);
  const res = await fetch(`${options.url}/v1/keys/import`, {
    method: "POST",
    headers,
    body: JSON.stringify({ keySpec, wrappedKey, name: options.name, description: options.description }),
  });
  if (res.status !== 201) throw new Error(`POST /v1/keys/import: ${res.status} ${await res.text()}`);
  return await res.json();
}

/**
 * Wraps a private key for `POST /v1/keys/import` and names its key spec.
 *
 * @example
 * ```ts
 * import { generateKeyPairSync } from "node:crypto";
 * import { wrapKey } from "./import_key.ts";
 *
 * // The server's wrapping key is RSA-4096; any RSA public key wraps the same way.
 * const wrapping = generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey;
 * const wrappingSpkiDer = new Uint8Array(wrapping.export({ type: "spki", format: "der" }));
 * const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
 * const { keySpec, wrappedKey } = wrapKey(privateKey, wrappingSpkiDer); // "ECC_NIST_P256", base64
 * ```
 */
export function wrapKey(key: KeyObject, wrappingSpki: Uint8Array): { keySpec: KeySpec; wrappedKey: string } {
  const keySpec = keySpecOf(key);
  const pkcs8 = key.export({ type: "pkcs8", format: "der" });
  const aesKey = randomBytes(32);
  try {
    const wrapping = createPublicKey({ key: Buffer.from(wrappingSpki), format: "der", type: "spki" });
    const oaep = publicEncrypt({ key: wrapping, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, aesKey);
    const kwp = createCipheriv("id-aes256-wrap-pad", aesKey, KWP_IV);
    const wrapped = Buffer.concat([oaep, kwp.update(pkcs8), kwp.final()]);
    return { keySpec, wrappedKey: wrapped.toString("base64") };
  } finally {
    aesKey.fill(0);
    pkcs8.fill(0);
  }
}

function keySpecOf(key: KeyObject): KeySpec {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === "rsa") {
    const spec = ({ 2048: "RSA_2048", 3072: "RSA_3072", 4096: "RSA_4096" } as const)[details.modulusLength as 2048];
    if (spec) return spec;
  } else if (key.asymmetricKeyType === "ec") {
    const spec = ({ prime256v1: "ECC_NIST_P256", secp384r1: "ECC_NIST_P384" } as const)[details.namedCurve as "prime256v1"];
    if (spec) return spec;
  }
  throw new Error("not a supported key: RSA 2048/3072/4096, P-256 or P-384");
}

/** Which DER form a key file is in: the first that node:crypto parses. */
function derType(der: Uint8Array): "pkcs8" | "pkcs1" | "sec1" {
  for (const type of ["pkcs8", "pkcs1", "sec1"] as const) {
    try {
      createPrivateKey({ key: Buffer.from(der), format: "der", type });
      return type;
    } catch {
      // try the next form
    }
  }
  throw new Error("not a DER private key");
}
