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
import type { KeyDetails } from "../core/key_service.ts";

/** What a request's handlers add to its audit record. */
export type AuditFields = Pick<AuditRecord, "error" | "keyId" | "keyName" | "keySpec" | "algorithm" | "messageSha256" | "batch">;

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
export function keyJson(key: KeyInfo): { id: string; keySpec: string; publicKey: string; name?: string } {
  return { id: key.id, keySpec: key.keySpec, publicKey: key.publicKey.toBase64(), ...(key.name !== undefined ? { name: key.name } : {}) };
}

/** A time as the API shows it: ISO 8601 in UTC. */
const isoTime = (ms: number | undefined) => ms === undefined ? undefined : new Date(ms).toISOString();

/**
 * A named key as the API shows it: the key the reference stood for, its name's versions, state
 * and metadata, times in ISO 8601.
 *
 * @example
 * ```ts
 * import type { KeyService } from "../core/key_service.ts";
 * declare const keys: KeyService;
 * console.log(keyDetailsJson(await keys.describeKey("web")).versions);
 * ```
 */
export function keyDetailsJson(key: KeyDetails): Record<string, unknown> {
  return {
    ...keyJson(key),
    name: key.name,
    state: key.state,
    primary: key.primary,
    versions: key.versions.map((v) => ({ id: v.id, version: v.version, ...(v.created !== undefined ? { created: isoTime(v.created) } : {}) })),
    ...(key.created !== undefined ? { created: isoTime(key.created) } : {}),
    ...(key.description !== undefined ? { description: key.description } : {}),
    ...(key.labels !== undefined ? { labels: key.labels } : {}),
    ...(key.deletionDate !== undefined ? { deletionDate: isoTime(key.deletionDate) } : {}),
  };
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
  // Answered before its body was read whole: the connection can carry no further request.
  if (err.code === "request_timeout" || err.code === "too_large") headers["Connection"] = "close";
  return c.json(err.toJSON(), err.status, headers);
}
