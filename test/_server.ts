/**
 * Talks to a running `keycell serve` (started with `startServer` in ./_command.ts) over its HTTP API.
 *
 * @module
 */

import { assertEquals } from "./_assert.ts";
import type { FixtureKey } from "./_fixtures.ts";
import { ALGORITHM_DETAILS, algorithmsFor, digestFor } from "./_verify.ts";

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
 * r||s), asserting each answers 200.
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
  }
}
