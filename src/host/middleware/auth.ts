/**
 * Who may call what: bearer-token authentication, full-scope routes and key scopes.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { type Env, grantOf } from "../_env.ts";
import { admit, mayUse, type TokenStore } from "../auth.ts";
import { KeycellError } from "../../core/errors.ts";
import { KEY_ID_PATTERN } from "../../core/protocol.ts";

/**
 * Authenticates the request's bearer token (401 without a valid one), counts it against the
 * token's rate (429 over it) and sets `c.var.grant`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { TokenStore } from "../auth.ts";
 * const app = new Hono<Env>();
 * app.use("/v1/*", authenticate(TokenStore.fromEntries([])));
 * ```
 */
export function authenticate(tokens: TokenStore): MiddlewareHandler<Env> {
  return async function authenticate(c, next) {
    const grant = tokens.authenticate(c.req.header("Authorization"));
    c.set("grant", grant);
    admit(grant);
    await next();
  };
}

/**
 * Lets only a token scoped to every key through; others get 403 naming `what` they tried.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * const keys = new Hono<Env>().post("/", fullScope("generating keys"), (c) => c.body(null, 204));
 * ```
 */
export function fullScope(what: string): MiddlewareHandler<Env> {
  return async function fullScope(c, next) {
    if (grantOf(c).keys !== "*") throw new KeycellError("forbidden", `${what} needs a token scoped to every key`);
    await next();
  };
}

/** What {@linkcode permittedKey} gives the handler: `c.req.valid("param").id`. */
export type KeyParam = { out: { param: { id: string } } };

/**
 * Checks the `:id` path parameter: a well-formed key id (else 404, as for an unknown key) that
 * the token may use (else 403). The handler reads it as `c.req.valid("param").id`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * const keys = new Hono<Env>().get("/:id", permittedKey(), (c) => c.text(c.req.valid("param").id));
 * ```
 */
export function permittedKey(): MiddlewareHandler<Env, string, KeyParam> {
  return async function permittedKey(c, next) {
    const id = c.req.param("id") ?? "";
    // Not hex, or too long: no key can have that id, and saying so is all the caller learns.
    if (!KEY_ID_PATTERN.test(id)) throw new KeycellError("key_not_found", "no key with that id");
    c.get("audit").keyId = id;
    if (!mayUse(grantOf(c), id)) throw new KeycellError("forbidden", "this token may not use that key");
    c.req.addValidatedData("param", { id });
    await next();
  };
}
