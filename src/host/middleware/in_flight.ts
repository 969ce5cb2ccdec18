/**
 * A bound on the signer calls the app has in flight.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import type { Env } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";

/**
 * Lets at most `max` requests through at once; more answer 429 `overloaded` at once rather than
 * queue behind the signer. One limiter is shared by every route it is put on; put it after the
 * request's validation, so a body still arriving holds no place.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { permittedKey } from "./auth.ts";
 * const limit = inFlightLimit(256);
 * const keys = new Hono<Env>().get("/:id", permittedKey(), limit, (c) => c.text(c.req.valid("param").id));
 * ```
 */
export function inFlightLimit(max: number): MiddlewareHandler<Env> {
  let inFlight = 0;
  return async function inFlightLimit(_c, next) {
    if (inFlight >= max) throw new KeycellError("overloaded", "too many signing requests in flight; retry later");
    inFlight++;
    try {
      await next();
    } finally {
      inFlight--;
    }
  };
}
