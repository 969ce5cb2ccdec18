/**
 * Talks to a running `keycell serve` (started with `startServer` in ./_command.ts) over its HTTP API.
 *
 * @module
 */

import { assert, assertEquals } from "./_assert.ts";
import type { FixtureKey } from "./_fixtures.ts";
import type { KeySpec } from "../src/core/protocol.ts";
import { JWS_ALGORITHMS } from "../src/host/jose.ts";
import { ALGORITHM_DETAILS, type AlgorithmName, algorithmsFor, digestFor, type Hash, opensslVerify, type Scheme, webCryptoVerify } from "./_verify.ts";

/** Calls a running server's HTTP API with a bearer token; JSON bodies. */
export type Api = (method: string, path: string, body?: unknown) => Promise<Response>;

/**
 * An {@linkcode Api} for one server and token.
 *
 * @example
 * ```ts
 * import { apiClient } from "./_server.ts";
 *
 * async function generate(server: { url: string }, token: string): Promise<Response> {
 *   const api = apiClient(server, token);
 *   return await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
 * }
 * ```
 */
export function apiClient(server: { url: string }, token: string): Api {
  return (method, path, body) =>
    fetch(`${server.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
}

/**
 * Signs with every algorithm the key's spec allows, as a DIGEST and as a RAW message (ECDSA RAW in
 * r||s), then all of them again in one sign-batch, and a JWS with every `alg` the key takes,
 * asserting each answers 200 (and every batch item a signature).
 *
 * @example
 * ```ts
 * import { type Api, signEveryWay } from "./_server.ts";
 *
 * async function check(api: Api, id: string): Promise<void> {
 *   await signEveryWay(api, { id, keySpec: "RSA_2048" });
 * }
 * ```
 */
export async function signEveryWay(api: Api, key: Pick<FixtureKey, "id" | "keySpec">): Promise<void> {
  const message = crypto.getRandomValues(new Uint8Array(100));
  const batch: unknown[] = [];
  for (const algorithm of algorithmsFor(key.keySpec)) {
    const ecdsa = ALGORITHM_DETAILS[algorithm].scheme === "ECDSA";
    const bodies = [
      { algorithm, messageType: "DIGEST", message: (await digestFor(algorithm, message)).toBase64() },
      { algorithm, messageType: "RAW", message: message.toBase64(), ...(ecdsa ? { signatureFormat: "RAW" } : {}) },
    ];
    for (const body of bodies) {
      const res = await api("POST", `/v1/keys/${key.id}/sign`, body);
      assertEquals(res.status, 200, `${key.keySpec} ${algorithm} ${body.messageType}`);
      await res.body?.cancel();
    }
    batch.push(...bodies);
  }
  const batched = await api("POST", `/v1/keys/${key.id}/sign-batch`, { batch });
  assertEquals(batched.status, 200, `${key.keySpec} sign-batch`);
  const { results } = await batched.json() as { results: { signature?: string }[] };
  assertEquals(results.filter((r) => r.signature !== undefined).length, batch.length, `${key.keySpec} sign-batch: a signature per item`);
  for (const [alg, { keySpecs }] of Object.entries(JWS_ALGORITHMS)) {
    if (!(keySpecs as readonly KeySpec[]).includes(key.keySpec)) continue;
    const res = await api("POST", `/v1/keys/${key.id}/jws`, { protectedHeader: { alg }, payload: message.toBase64({ alphabet: "base64url", omitPadding: true }) });
    assertEquals(res.status, 200, `${key.keySpec} JWS ${alg}`);
    await res.body?.cancel();
  }
}

/** Checks a DER signature over a digest with the openssl CLI and the key's SPKI alone. */
async function opensslVerifies(key: FixtureKey, algorithm: AlgorithmName, digest: Uint8Array<ArrayBuffer>, signature: Uint8Array<ArrayBuffer>) {
  const { scheme, hash } = ALGORITHM_DETAILS[algorithm];
  return await opensslVerify(key.spki, { scheme: scheme.toLowerCase() as Scheme, hash: hash.replace("-", "").toLowerCase() as Hash }, digest, signature);
}

/**
 * Signs with every algorithm the key allows, a DIGEST checked by openssl and a RAW message by WebCrypto.
 *
 * @example
 * ```ts
 * import { type Api, generate, signAndVerify } from "./_server.ts";
 *
 * async function check(api: Api, dir: string): Promise<void> {
 *   await signAndVerify(api, await generate(api, "ECC_NIST_P256", dir));
 * }
 * ```
 */
export async function signAndVerify(api: Api, key: FixtureKey): Promise<void> {
  const message = crypto.getRandomValues(new Uint8Array(100));
  for (const algorithm of algorithmsFor(key.keySpec)) {
    const ecdsa = ALGORITHM_DETAILS[algorithm].scheme === "ECDSA";
    const digest = await digestFor(algorithm, message);
    const byDigest = await api("POST", `/v1/keys/${key.id}/sign`, { algorithm, messageType: "DIGEST", message: digest.toBase64() });
    assertEquals(byDigest.status, 200, `${key.keySpec} ${algorithm} DIGEST`);
    const der = Uint8Array.fromBase64((await json(byDigest)).signature as string);
    assert(await opensslVerifies(key, algorithm, digest, der), `openssl verifies ${key.keySpec} ${algorithm}`);

    const raw = await api("POST", `/v1/keys/${key.id}/sign`, { algorithm, messageType: "RAW", message: message.toBase64(), ...(ecdsa ? { signatureFormat: "RAW" } : {}) });
    assertEquals(raw.status, 200, `${key.keySpec} ${algorithm} RAW`);
    const signature = Uint8Array.fromBase64((await json(raw)).signature as string);
    assert(await webCryptoVerify(key, algorithm, message, signature), `WebCrypto verifies ${key.keySpec} ${algorithm}`);
  }
}

/** Generates a key over HTTP; answers it as a fixture (its public key written for `dir`, for openssl). */
export async function generate(api: Api, keySpec: KeySpec, dir: string): Promise<FixtureKey> {
  const res = await api("POST", "/v1/keys", { keySpec });
  assertEquals(res.status, 201);
  const body = await json(res);
  assertEquals(body.keySpec, keySpec);
  const spki = Uint8Array.fromBase64(body.publicKey as string);
  const id = new Uint8Array(await crypto.subtle.digest("SHA-256", spki)).toHex();
  assertEquals(body.id, id, "the id is the SHA-256 of the SPKI");
  const publicPath = `${dir}/${id}.pem`;
  await Deno.writeTextFile(publicPath, `-----BEGIN PUBLIC KEY-----\n${spki.toBase64()}\n-----END PUBLIC KEY-----\n`);
  return { keySpec, path: "", publicPath, spki, id };
}

async function json(res: Response): Promise<Record<string, unknown>> {
  return await res.json();
}
