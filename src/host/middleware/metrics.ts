/**
 * Request counters for `/metrics`.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { Env } from "../_env.ts";
import type { Metrics } from "../metrics.ts";

/**
 * Counts every answered request by route pattern and status, and authenticated ones by token.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * const app = new Hono<Env>();
 * app.use(requestMetrics(new Metrics()));
 * ```
 */
export function requestMetrics(metrics: Metrics): MiddlewareHandler<Env> {
  return async function requestMetrics(c, next) {
    await next();
    // The route the request matched, even when a middleware (authentication) answered it.
    const route = routePath(c, -1);
    const status = String(c.res.status);
    metrics.count("keycell_http_requests_total", { route, status });
    const token = c.get("grant")?.name;
    if (token !== undefined) metrics.count("keycell_token_requests_total", { token, status });
  };
}
