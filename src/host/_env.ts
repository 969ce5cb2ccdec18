/**
 * What the app's middleware and routes share: the Hono environment (bindings and per-request
 * variables) and the few helpers every route uses.
 *
 * @module
 */

import type { Context } from "hono";
import type { AuditRecord } from "./audit.ts";
import type { Grant } from "./auth.ts";
import type { KeycellError } from "../core/errors.ts";
import type { KeyInfo } from "../core/signer_client.ts";

/** What a request's handlers add to its audit record. */
export type AuditFields = Pick<AuditRecord, "error" | "keyId" | "keySpec" | "algorithm" | "messageSha256">;

/** The app's Hono environment. */
export type Env = {
  /** Deno.serve's connection info, when the app is served (absent under `app.request`). */
  Bindings: { remoteAddr?: Deno.Addr };
  Variables: {
    /** Set by `authenticate` on every route behind it. */
    grant?: Grant;
    /** Set by `auditTrail` on every request. */
    audit: AuditFields;
    /** The request's id, when the client sent a well-formed one or the audit log needs one. */
    requestId?: string;
  };
};

/**
 * The grant of an authenticated request; every route that asks is behind `authenticate`.
 *
 * @example
 * ```ts
 * import type { Context } from "hono";
 * declare const c: Context<Env>;
 * if (grantOf(c).keys === "*") console.log("a full-scope token");
 * ```
 */
export function grantOf(c: Context<Env>): Grant {
  return c.get("grant")!;
}

/**
 * A key as the API shows it.
 *
 * @example
 * ```ts
 * import type { SignerClient } from "../core/signer_client.ts";
 * declare const signer: SignerClient;
 * console.log(keyJson(await signer.getKey("ab".repeat(32))).publicKey);
 * ```
 */
export function keyJson(key: KeyInfo): { id: string; keySpec: string; publicKey: string } {
  return { id: key.id, keySpec: key.keySpec, publicKey: key.publicKey.toBase64() };
}

/**
 * keycell's answer to a failed request: `{error: {code, message}}` with the code's status, noted
 * in the request's audit record.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { KeycellError } from "../core/errors.ts";
 * const app = new Hono<Env>();
 * app.notFound((c) => errorResponse(c, new KeycellError("not_found", "no such route")));
 * ```
 */
export function errorResponse(c: Context<Env>, err: KeycellError, headers: Record<string, string> = {}): Response {
  c.get("audit").error = err.code;
  if (err.code === "unauthorized") headers["WWW-Authenticate"] = "Bearer";
  if (err.retryAfterSeconds !== undefined) headers["Retry-After"] = String(Math.ceil(err.retryAfterSeconds));
  return c.json(err.toJSON(), err.status, headers);
}
