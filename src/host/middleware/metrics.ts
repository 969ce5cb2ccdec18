/**
 * Request counters, latencies and the in-flight gauge for `/metrics`.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { Env } from "../_env.ts";
import type { Metrics } from "../metrics.ts";

/**
 * Counts every answered request by route pattern and status (authenticated ones by token too),
 * observes its latency by route pattern and method, and keeps the in-flight gauge.
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
    const start = performance.now();
    metrics.requestStarted();
    try {
      await next();
    } finally {
      metrics.requestEnded({
        // The route the request matched, even when a middleware (authentication) answered it.
        route: routePath(c, -1),
        method: c.req.method,
        status: c.res.status,
        seconds: (performance.now() - start) / 1000,
        token: c.get("grant")?.name,
      });
    }
  };
}
