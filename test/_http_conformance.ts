/**
 * The HTTP API's conformance checks, shared by every server that serves it (workerd, Deno Deploy):
 * the same statuses and error codes as `serve`, signatures checked by openssl and WebCrypto.
 *
 * @module
 */

import { assert, assertEquals } from "./_assert.ts";
import { type FixtureKey, makeKeys } from "./_fixtures.ts";
import { wrapForImport } from "./_wrap.ts";
import { type Api, apiClient, generate, signAndVerify } from "./_server.ts";

/** A response's JSON body. */
export async function json(res: Response): Promise<Record<string, unknown>> {
  return await res.json();
}

/** A failed response's status and error code. */
export async function statusAndCode(res: Response): Promise<[number, string]> {
  return [res.status, ((await json(res)).error as { code: string }).code];
}

/** The keys {@linkcode checkKeyRoutes} made: a P-256 and an RSA-2048 key generated, a P-384 key imported wrapped. */
export interface ConformanceKeys {
  ec: FixtureKey;
  rsa: FixtureKey;
  p384: FixtureKey;
}

/**
 * Authentication, generation, wrapped import (a tampered one refused), listing and paging, get and
 * signing with every key, on a server with no keys yet. `root` is a directory for fixture files.
 *
 * @example
 * ```ts
 * import { checkKeyRoutes } from "./_http_conformance.ts";
 * import { apiClient } from "./_server.ts";
 *
 * async function check(server: { url: string }, token: string, root: string) {
 *   return await checkKeyRoutes(server, apiClient(server, token), root);
 * }
 * ```
 */
export async function checkKeyRoutes(server: { url: string }, api: Api, root: string): Promise<ConformanceKeys> {
  const anonymous = await fetch(`${server.url}/v1/keys`);
  assertEquals([anonymous.status, anonymous.headers.get("WWW-Authenticate"), (await json(anonymous)).error], [401, "Bearer", {
    code: "unauthorized",
    message: "a bearer token is required",
  }]);
  assertEquals(await statusAndCode(await apiClient(server, "not-the-token")("GET", "/v1/keys")), [401, "unauthorized"]);

  const ec = await generate(api, "ECC_NIST_P256", root);
  const rsa = await generate(api, "RSA_2048", root);

  // Wrapped import: openssl wraps a key to the guest's wrapping key.
  const wrapping = await api("GET", "/v1/wrapping-key");
  assertEquals(wrapping.status, 200);
  const wrappingSpki = Uint8Array.fromBase64((await json(wrapping)).publicKey as string);
  const [p384] = await makeKeys(`${root}/fixtures`, ["ECC_NIST_P384"]);
  const wrapped = await wrapForImport(root, wrappingSpki, p384.path);
  const flipped = wrapped.slice();
  flipped[flipped.length - 1] ^= 1;
  assertEquals(await statusAndCode(await api("POST", "/v1/keys/import", { keySpec: "ECC_NIST_P384", wrappedKey: flipped.toBase64() })), [400, "bad_request"]);
  const imported = await api("POST", "/v1/keys/import", { keySpec: "ECC_NIST_P384", wrappedKey: wrapped.toBase64() });
  assertEquals([imported.status, (await json(imported)).id], [201, p384.id]);
  await signAndVerify(api, p384);

  const all = [ec.id, rsa.id, p384.id].sort();
  assertEquals(((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id), all);
  const paged: string[] = [];
  let cursor: unknown;
  for (let pages = 0; pages < 3; pages++) {
    const page = await json(await api("GET", `/v1/keys?limit=1${cursor ? `&cursor=${cursor}` : ""}`));
    paged.push(...(page.keys as { id: string }[]).map((k) => k.id));
    cursor = page.nextCursor;
  }
  assertEquals([paged, cursor], [all, undefined], "three pages of one, the last without a cursor");
  assertEquals((await api("GET", "/v1/keys?limit=0")).status, 400);

  const got = await api("GET", `/v1/keys/${rsa.id}`);
  assertEquals([got.status, await got.json()], [200, { id: rsa.id, keySpec: "RSA_2048", publicKey: rsa.spki.toBase64() }]);
  await signAndVerify(api, ec);
  await signAndVerify(api, rsa);
  return { ec, rsa, p384 };
}

/**
 * The errors `serve` answers for unknown keys and routes and bad requests, then deleting `key`:
 * afterwards it is `key_not_found` everywhere, a second delete included.
 *
 * @example
 * ```ts
 * import { checkErrorsAndDelete } from "./_http_conformance.ts";
 * import type { Api } from "./_server.ts";
 * import type { FixtureKey } from "./_fixtures.ts";
 *
 * async function check(api: Api, ec: FixtureKey) {
 *   await checkErrorsAndDelete(api, ec);
 * }
 * ```
 */
export async function checkErrorsAndDelete(api: Api, key: FixtureKey): Promise<void> {
  assert(key.keySpec === "ECC_NIST_P256", "the key deleted is the P-256 one");
  const sign = { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" };
  const absent = "0".repeat(64);
  assertEquals(await statusAndCode(await api("GET", `/v1/keys/${absent}`)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("GET", "/v1/keys/not-an-id")), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${absent}/sign`, sign)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("GET", "/v1/nowhere")), [404, "not_found"]);
  assertEquals(await statusAndCode(await api("POST", "/v1/keys", { keySpec: "RSA_1024" })), [400, "bad_request"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${key.id}/sign`, { ...sign, algorithm: "RSASSA_PSS_SHA_256" })), [400, "bad_request"]);

  assertEquals((await api("DELETE", `/v1/keys/${key.id}`)).status, 204);
  assertEquals(await statusAndCode(await api("GET", `/v1/keys/${key.id}`)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("POST", `/v1/keys/${key.id}/sign`, sign)), [404, "key_not_found"]);
  assertEquals(await statusAndCode(await api("DELETE", `/v1/keys/${key.id}`)), [404, "key_not_found"]);
}

/**
 * After a restart: the kept keys are listed and sign, and a token scoped to `scoped` lists only
 * that key, with no cursor to the others.
 *
 * @example
 * ```ts
 * import { checkAfterRestart } from "./_http_conformance.ts";
 * import { apiClient } from "./_server.ts";
 * import type { FixtureKey } from "./_fixtures.ts";
 *
 * async function check(server: { url: string }, admin: string, scopedToken: string, rsa: FixtureKey, p384: FixtureKey) {
 *   await checkAfterRestart(apiClient(server, admin), apiClient(server, scopedToken), rsa, [rsa, p384]);
 * }
 * ```
 */
export async function checkAfterRestart(api: Api, scopedApi: Api, scoped: FixtureKey, kept: FixtureKey[]): Promise<void> {
  assertEquals(((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id), kept.map((k) => k.id).sort());
  const page = await json(await scopedApi("GET", "/v1/keys?limit=1"));
  assertEquals([(page.keys as { id: string }[]).map((k) => k.id), page.nextCursor], [[scoped.id], undefined], "only the token's key, no cursor");
  for (const key of kept) await signAndVerify(api, key);
}
