/**
 * A `keycell serve` with one P-256 key for the reliability scenarios, and a signing client of it.
 *
 * @module
 */

import { assertEquals } from "../_assert.ts";
import { type RunningServer, startServer } from "../_command.ts";
import { type Api, apiClient } from "../_server.ts";
import { tempDir } from "../_temp.ts";
import { keylessNames } from "../../src/core/key_names.ts";

/** A running server, its admin token and one key. */
export interface SigningServer {
  server: RunningServer;
  dataDir: string;
  token: string;
  api: Api;
  key: { id: string; ski: Uint8Array };
  /** One HTTP signature with the key: its status, e.g. "200". */
  sign(client?: Deno.HttpClient): Promise<string>;
}

/**
 * Starts `serve` in a new data directory (or `dataDir`) with `env`, and generates a P-256 key.
 *
 * @example
 * ```ts
 * const { server, sign } = await serveWithKey({ KEYCELL_SIGNER: "inline" });
 * console.log(await sign()); // "200"
 * await server.stop();
 * ```
 */
export async function serveWithKey(env: Record<string, string>, options: { dataDir?: string; openFiles?: number } = {}): Promise<SigningServer> {
  const dataDir = options.dataDir ?? await tempDir("keycell-reliability-");
  const server = await startServer({ dataDir, env, openFiles: options.openFiles });
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const api = apiClient(server, token);
  const created = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
  assertEquals(created.status, 201);
  const body = await created.json();
  const key = { id: body.id as string, ski: keylessNames(Uint8Array.fromBase64(body.publicKey))!.ski };
  return { server, dataDir, token, api, key, sign: signer(server.url, token, key.id) };
}

/** One HTTP signature with `keyId` per call: its status, or what went wrong. */
export function signer(url: string, token: string, keyId: string): (client?: Deno.HttpClient) => Promise<string> {
  const body = JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(7).toBase64() });
  const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  return async (client) => {
    const res = await fetch(`${url}/v1/keys/${keyId}/sign`, { method: "POST", headers, body, client });
    await res.body?.cancel();
    return String(res.status);
  };
}
