/**
 * The audit trail of the HTTP API: each request's id, and one audit record per answered request.
 *
 * @module
 */

import type { Context, MiddlewareHandler, Next } from "hono";
import { routePath } from "hono/route";
import type { AuditFields, Env } from "../_env.ts";
import type { AuditTrail } from "../audit.ts";
import type { ErrorCode } from "../../core/errors.ts";
import { PROBE_ROUTES } from "../routes/health.ts";

/** A client's `X-Request-Id` is kept when it looks like an id; otherwise, with an audit log, the server makes one. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;


/**
 * Gives each request its id (the `X-Request-Id` answer header and `c.var.requestId`) and, with an
 * audit log, records who did what to which key and how it ended, once the answer is made. Routes
 * add their fields to `c.var.audit`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import type { AuditRecord } from "../audit.ts";
 *
 * const records: AuditRecord[] = [];
 * const app = new Hono<Env>();
 * app.use(auditTrail({ record: (r) => void records.push(r) }));
 * ```
 */
export function auditTrail(audit?: AuditTrail): MiddlewareHandler<Env> {
  return function auditTrail(c, next) {
    const fields: AuditFields = {};
    c.set("audit", fields);
    const requestId = requestIdOf(c.req.header("X-Request-Id"), audit);
    // Set before the answer is made, so every answer (errors and 404s included) is built with it.
    if (requestId !== undefined) {
      c.set("requestId", requestId);
      c.header("X-Request-Id", requestId);
    }
    // Without a log, nothing is left to do once the answer is made: no async frame of its own.
    if (audit === undefined || requestId === undefined) return next();
    return record(c, next, audit, requestId);
  };
}

/** Runs the request and records it in `audit`, unless it was a probe. */
async function record(c: Context<Env>, next: Next, audit: AuditTrail, requestId: string): Promise<void> {
  const start = performance.now();
  await next();
  // The route the request matched, even when a middleware (authentication) answered it.
  const route = routePath(c, -1);
  // The probes: load balancers and orchestrators ask them every few seconds.
  if (PROBE_ROUTES.includes(route)) return;
  const remote = c.env?.remoteAddr;
  audit.record({
    time: new Date().toISOString(),
    requestId,
    remote: remote?.transport === "tcp" ? remote.hostname : undefined,
    token: c.get("grant")?.name,
    method: c.req.method,
    route,
    status: c.res.status,
    ...c.get("audit"),
    ms: Math.round((performance.now() - start) * 1000) / 1000,
  });
}

/**
 * A request's id: the client's `X-Request-Id` when it looks like one, else, with an audit log, one
 * made for the log to name (the header costs about 3 µs per answer, so none is made without one).
 *
 * @example
 * ```ts
 * import { requestIdOf } from "./audit.ts";
 *
 * requestIdOf("req-42"); // "req-42"
 * requestIdOf("not an id"); // undefined
 * ```
 */
export function requestIdOf(supplied: string | null | undefined, audit?: AuditTrail): string | undefined {
  return supplied != null && REQUEST_ID.test(supplied) ? supplied : audit && crypto.randomUUID();
}

/**
 * Records a request refused before the app ran (shed under overload: no token was checked and no
 * key looked at), as {@linkcode auditTrail} records the others.
 *
 * @example
 * ```ts
 * import type { AuditRecord } from "../audit.ts";
 *
 * const records: AuditRecord[] = [];
 * const request = new Request("http://keycell.test/v1/keys/ab/sign", { method: "POST" });
 * recordShed({ record: (r) => void records.push(r) }, request, undefined, { requestId: "req-1", route: "/v1/keys/:id/sign", status: 429, error: "overloaded" });
 * ```
 */
export function recordShed(
  audit: AuditTrail,
  request: Request,
  remoteAddr: Env["Bindings"]["remoteAddr"],
  answer: { requestId: string; route: string; status: number; error: ErrorCode },
): void {
  audit.record({
    time: new Date().toISOString(),
    requestId: answer.requestId,
    remote: remoteAddr?.transport === "tcp" ? remoteAddr.hostname : undefined,
    method: request.method,
    route: answer.route,
    status: answer.status,
    error: answer.error,
    ms: 0,
  });
}
