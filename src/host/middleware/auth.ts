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
import { KEY_NAME_PATTERN, type KeyService } from "../../core/key_service.ts";

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
  // Not async, nor is any middleware here that decides at once: an async function would add a
  // promise and a turn of the microtask queue to every request.
  return function authenticate(c, next) {
    const grant = tokens.authenticate(c.req.header("Authorization"));
    c.set("grant", grant);
    admit(grant);
    return next();
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
  return function fullScope(c, next) {
    if (grantOf(c).keys !== "*") throw new KeycellError("forbidden", `${what} needs a token scoped to every key`);
    return next();
  };
}

/**
 * What {@linkcode permittedKey} gives the handler: `c.req.valid("param")`, the path's key id or
 * name (`ref`) and the id of the key it stands for (`id`).
 */
export type KeyParam = { out: { param: { id: string; ref: string } } };

/**
 * Checks the `:id` path parameter: a key id, or a key's name (else 404, as for an unknown key)
 * that the token may use as written (else 403). A name is resolved through `names` to the key
 * that signs (`use` "sign": its enabled primary) or verifies (`use` "read") for it; an id stands
 * for itself. Without `names`, only ids are known.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * const keys = new Hono<Env>().get("/:id", permittedKey(), (c) => c.text(c.req.valid("param").id));
 * ```
 */
export function permittedKey(
  names?: Pick<KeyService, "resolveKey">,
  use: "sign" | "read" = "read",
): MiddlewareHandler<Env, string, KeyParam> {
  return function permittedKey(c, next) {
    const ref = c.req.param("id") ?? "";
    const isId = KEY_ID_PATTERN.test(ref);
    // Neither an id nor a name: no key can be called that, and saying so is all the caller learns.
    if (!isId && (names === undefined || !KEY_NAME_PATTERN.test(ref))) throw new KeycellError("key_not_found", "no key with that id");
    const audit = c.get("audit");
    if (isId) audit.keyId = ref;
    else audit.keyName = ref;
    if (!mayUse(grantOf(c), ref)) throw new KeycellError("forbidden", "this token may not use that key");
    const permitted = (id: string) => {
      audit.keyId = id;
      c.req.addValidatedData("param", { id, ref });
      return next();
    };
    return isId ? permitted(ref) : names!.resolveKey(ref, use).then(permitted);
  };
}
