/**
 * `GET /metrics`, in the Prometheus text format.
 *
 * @module
 */

import { Hono } from "hono";
import type { Env } from "../_env.ts";
import type { Metrics } from "../metrics.ts";
import { fullScope } from "../middleware/auth.ts";

/**
 * The metrics route, to mount at `/metrics` behind `authenticate`; it needs a full-scope token.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * const app = new Hono<Env>();
 * app.route("/metrics", metricsRoute(new Metrics()));
 * ```
 */
export function metricsRoute(metrics: Metrics): Hono<Env> {
  return new Hono<Env>().get("/", fullScope("metrics"), (c) => c.text(metrics.render(), 200, { "Content-Type": metrics.contentType }));
}
