/**
 * The HTTP app over sealed keys, as `serve` builds it, for route tests: an inline (or worker)
 * guest, a SQLite key store and a master key in a directory, fixture keys imported from a key
 * directory, and two tokens: `ADMIN` (every key) and `SCOPED` (the keys it is given).
 *
 * @module
 */

import type { Hono } from "hono";
import { createApp, type Env } from "../src/host/app.ts";
import type { AuditRecord } from "../src/host/audit.ts";
import { sha256Hex, TokenStore } from "../src/host/auth.ts";
import type { SealedSigner } from "../src/core/sealed_keys.ts";
import { startSealedSigner } from "../src/deno/sealed_start.ts";
import { SqliteKeyStore } from "../src/deno/store/sqlite.ts";
import { WASM } from "./_wasm.ts";

/** The full-scope token. */
export const ADMIN = "admin-token-for-route-tests";
/** The token scoped to {@linkcode AppOptions.scopedKeys}. */
export const SCOPED = "scoped-token-for-route-tests";

/** What {@linkcode sealedApp} builds. */
export interface AppOptions {
  /** The directory holding `keys.db` and `master.key`; the same one serves the same keys again. */
  dir: string;
  /** A directory of key files to import into the store. */
  importKeysDir?: string;
  /** The key ids `SCOPED` may use. */
  scopedKeys?: string[];
  mode?: "inline" | "worker";
  maxBodyBytes?: number;
}

/** A request as the tests make it: the admin token unless `token` says otherwise (`null`: none), JSON from `json`. */
export type TestRequest = RequestInit & { token?: string | null; json?: unknown };

/** The app and what it runs on. */
export interface TestApp {
  app: Hono<Env>;
  signer: SealedSigner;
  /** The audit records of every request answered so far. */
  audit: AuditRecord[];
  request(path: string, init?: TestRequest): Promise<Response>;
  close(): Promise<void>;
}

/**
 * Starts the app over sealed keys kept in `options.dir`.
 *
 * @example
 * ```ts
 * import { sealedApp } from "./_app.ts";
 * import { tempDir } from "./_temp.ts";
 *
 * const t = await sealedApp({ dir: await tempDir() });
 * const res = await t.request("/v1/keys", { method: "POST", json: { keySpec: "ECC_NIST_P256" } });
 * await t.close();
 * ```
 */
export async function sealedApp(options: AppOptions): Promise<TestApp> {
  const store = SqliteKeyStore.open(`${options.dir}/keys.db`);
  const { signer } = await startSealedSigner({
    mode: options.mode ?? "inline",
    wasm: WASM,
    store,
    masterKeyPath: `${options.dir}/master.key`,
    instances: 2,
    importKeysDir: options.importKeysDir,
  });
  const tokens = TokenStore.fromEntries([
    { name: "admin", sha256: sha256Hex(ADMIN), keys: "*" },
    { name: "scoped", sha256: sha256Hex(SCOPED), keys: options.scopedKeys ?? [] },
  ]);
  const audit: AuditRecord[] = [];
  const app = createApp({
    signer,
    keys: signer,
    tokens,
    maxBodyBytes: options.maxBodyBytes,
    audit: { record: (r) => void audit.push(r) },
  });
  return { app, signer, audit, request: (path, init) => requestTo(app, path, init), close: () => signer.close() };
}

/**
 * Sends one request to an app in process, with a bearer token and a JSON body as {@linkcode TestRequest} says.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { requestTo } from "./_app.ts";
 *
 * const res = await requestTo(new Hono(), "/healthz", { token: null });
 * ```
 */
export async function requestTo(
  app: { request(path: string, init: RequestInit): Response | Promise<Response> },
  path: string,
  init: TestRequest = {},
): Promise<Response> {
  const headers = new Headers(init.headers);
  const token = init.token === undefined ? ADMIN : init.token;
  if (token !== null) headers.set("Authorization", `Bearer ${token}`);
  let body = init.body;
  if (init.json !== undefined) {
    body = JSON.stringify(init.json);
    headers.set("Content-Type", "application/json");
  }
  return await app.request(path, { ...init, headers, body });
}

/**
 * The error code and status of an answer (`undefined` code for a success).
 *
 * @example
 * ```ts
 * import { errorOf } from "./_app.ts";
 *
 * await errorOf(Response.json({ error: { code: "forbidden", message: "no" } }, { status: 403 })); // [403, "forbidden"]
 * ```
 */
export async function errorOf(res: Response): Promise<[number, string | undefined]> {
  const text = await res.text();
  return [res.status, text ? JSON.parse(text).error?.code : undefined];
}
