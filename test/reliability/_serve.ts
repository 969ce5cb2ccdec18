/**
 * A `keycell serve` or `keycell keyserver` with one P-256 key for the reliability scenarios, and
 * signing clients of each.
 *
 * @module
 */

import { assertEquals } from "../_assert.ts";
import { type RunningProcess, type RunningServer, startKeyserverWithKey, startServer } from "../_command.ts";
import { tlsFiles } from "../_fixtures.ts";
import { type Api, apiClient } from "../_server.ts";
import { tempDir } from "../_temp.ts";
import { keylessNames } from "../../src/core/key_names.ts";
import type { KeylessClient } from "../../src/keyless/client.ts";
import { ERROR_NAMES, Opcode } from "../../src/keyless/codec.ts";

/** A running server, its admin token and one key. */
export interface SigningServer {
  server: RunningServer;
  dataDir: string;
  token: string;
  /** The named tokens, when asked for. */
  tokens: Record<string, string>;
  api: Api;
  key: { id: string; ski: Uint8Array };
  /** One HTTP signature with the key: its status, e.g. "200". */
  sign(client?: Deno.HttpClient): Promise<string>;
}

/**
 * Starts `serve` in a new data directory (or `dataDir`) with `env`, and generates a P-256 key;
 * with `inspect`, the inspector listens (test/_inspector.ts reads its memory through it).
 *
 * @example
 * ```ts
 * const { server, sign } = await serveWithKey({ KEYCELL_SIGNER: "inline" });
 * console.log(await sign()); // "200"
 * await server.stop();
 * ```
 */
export async function serveWithKey(
  env: Record<string, string>,
  options: { dataDir?: string; openFiles?: number; tokens?: string[]; inspect?: boolean } = {},
): Promise<SigningServer> {
  const dataDir = options.dataDir ?? await tempDir("keycell-reliability-");
  // Named tokens, each scoped to every key, in place of the admin token (the first is `token`).
  const tokens: Record<string, string> = {};
  if (options.tokens !== undefined) {
    const entries = [];
    for (const name of options.tokens) {
      tokens[name] = crypto.getRandomValues(new Uint8Array(24)).toHex();
      const sha256 = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(tokens[name]))).toHex();
      entries.push({ name, sha256, keys: "*" });
    }
    await Deno.writeTextFile(`${dataDir}/tokens.json`, JSON.stringify({ tokens: entries }), { mode: 0o600 });
  }
  const server = await startServer({ dataDir, env, openFiles: options.openFiles, inspect: options.inspect });
  const token = options.tokens?.length ? tokens[options.tokens[0]] : (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const api = apiClient(server, token);
  const created = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
  assertEquals(created.status, 201);
  const body = await created.json();
  const key = { id: body.id as string, ski: keylessNames(Uint8Array.fromBase64(body.publicKey))!.ski };
  return { server, dataDir, token, tokens, api, key, sign: signer(server.url, token, key.id) };
}

/**
 * Every key id the server lists, page by page. A store that has just come back may still answer
 * 503 for a moment: each page is asked again on a 503, for at most `patienceMs`; any other
 * failure throws with the answer.
 */
export async function listAll(api: Api, patienceMs = 10_000): Promise<string[]> {
  const ids: string[] = [];
  const giveUp = performance.now() + patienceMs;
  let cursor: string | undefined;
  do {
    const res = await api("GET", `/v1/keys?limit=1000${cursor ? `&cursor=${cursor}` : ""}`);
    if (res.status === 503 && performance.now() < giveUp) {
      await res.body?.cancel();
      await new Promise((resolve) => setTimeout(resolve, 100));
      continue;
    }
    const page = await res.json();
    assertEquals(res.status, 200, `listing the keys: ${JSON.stringify(page)}`);
    ids.push(...page.keys.map((k: { id: string }) => k.id));
    cursor = page.nextCursor;
  } while (cursor !== undefined);
  return ids;
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

/** A running `keycell keyserver` with one P-256 key, on TCP or TLS. */
export interface SigningKeyserver {
  keyserver: RunningProcess;
  ski: Uint8Array;
  /** A new connection to its TCP or TLS listener. */
  connect(): Promise<Deno.Conn>;
  /** That listener's `host:port`. */
  address: string;
}

/**
 * Starts `keycell keyserver` with one fixture P-256 key on a TCP listener (TLS with `tls`).
 *
 * @example
 * ```ts
 * const { keyserver, connect } = await keyserverWithKey({ tls: true });
 * const client = new KeylessClient(await connect());
 * ```
 */
export async function keyserverWithKey(options: { tls?: boolean; env?: Record<string, string> } = {}): Promise<SigningKeyserver> {
  let tls: Awaited<ReturnType<typeof tlsFiles>> | undefined;
  const { keyserver, key } = await startKeyserverWithKey({
    prefix: "keycell-reliability-ks-",
    env: async (root) => {
      tls = options.tls ? await tlsFiles(root) : undefined;
      return { ...(tls ? { KEYCELL_KEYSERVER_TLS_CERT: tls.certPath, KEYCELL_KEYSERVER_TLS_KEY: tls.keyPath } : {}), ...options.env };
    },
    ready: /ready on .*(?:tcp|tls):127\.0\.0\.1:(\d+)/,
  });
  const port = Number(keyserver.ready[1]);
  const connect = async (): Promise<Deno.Conn> => {
    if (tls === undefined) return await Deno.connect({ hostname: "127.0.0.1", port });
    const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [tls.ca] });
    await conn.handshake();
    return conn;
  };
  return { keyserver, ski: keylessNames(key.spki)!.ski, connect, address: `127.0.0.1:${port}` };
}

/** One Keyless ECDSA signature on `client`: "ok", the error's name, or what went wrong. */
export async function keylessSign(client: KeylessClient, ski: Uint8Array, timeoutMs = 10_000): Promise<string> {
  const answer = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32).fill(9), ski }, timeoutMs);
  return answer.kind === "ok" ? "ok" : answer.kind === "error" ? (ERROR_NAMES[answer.code] ?? `error ${answer.code}`) : answer.kind;
}
