/**
 * Bounds on the signer calls the app has in flight and on how long they wait for a guest.
 *
 * @module
 */

import type { Hono, MiddlewareHandler } from "hono";
import { getPath } from "hono/utils/url";
import { type Env, errorResponse } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";
import { FairScheduler, type Lane } from "../../core/scheduler.ts";
import type { AuditTrail } from "../audit.ts";
import type { Metrics } from "../metrics.ts";
import { recordShed, requestIdOf } from "./audit.ts";

/** One error for every request over the limit: under overload, one made for each would capture a stack trace each. */
const OVERLOADED = new KeycellError("overloaded", "too many signing requests in flight; retry later");

/** The two halves of {@linkcode signerLimits}. */
export interface SignerLimits {
  /** On each route that calls the signer, after the request's validation: takes a place, or refuses. */
  inFlight: MiddlewareHandler<Env>;
  /** In front of every such route, before anything else is done for a request: refuses what `inFlight` would. */
  refuseEarly: MiddlewareHandler<Env>;
  /** Whether the limit is reached: a request for a signer route arriving now is refused. */
  full(): boolean;
}

/**
 * Bounds on the signer calls in flight and, with `scheduler`, on their wait for a guest.
 *
 * `inFlight` lets at most `max` requests through at once; more answer 429 `overloaded` at once
 * rather than queue behind the signer. Put it on every route that calls the signer, after the
 * request's validation, so a body still arriving holds no place. With `scheduler`, each request's
 * handler is then one call of it, in its token's lane (tokens take turns, as the key server's
 * connections do), so the wait for a guest is bounded as the key server bounds it: a request that
 * would wait longer than the scheduler's `maxWaitMs` (judged from the calls ahead of it in turn
 * and how often calls finish) answers 503 `busy` with `Retry-After` at once, one still queued when that has passed answers so then, and one whose client has gone (the
 * request's signal aborted: the connection closed) is dropped before its handler runs, so it
 * never reaches the guest.
 *
 * `refuseEarly` answers those same 429 and 503 at once, after the request is authenticated (its
 * token says which lane it would wait in) but before its body is read, when a request arriving
 * now would be refused (the limit reached, or its token's queue already longer than the bound):
 * under overload most requests are refused, and one refused this early costs the thread that
 * serves every connection little beside the calls it accepts.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { FairScheduler } from "../../core/scheduler.ts";
 * import { authenticate, permittedKey } from "./auth.ts";
 * import { TokenStore } from "../auth.ts";
 * const { inFlight, refuseEarly } = signerLimits(256, new FairScheduler({ concurrency: 64, maxWaitMs: 5_000 }));
 * const keys = new Hono<Env>().use("/*", authenticate(TokenStore.fromEntries([])), refuseEarly)
 *   .get("/:id", permittedKey(), inFlight, (c) => c.text(c.req.valid("param").id));
 * ```
 */
export function signerLimits(max: number, scheduler?: FairScheduler): SignerLimits {
  let inFlight = 0;
  const lanes: TokenLanes | undefined = scheduler && { scheduler, byToken: new Map() };
  return {
    inFlight: async function inFlightLimit(c, next) {
      if (inFlight >= max) throw OVERLOADED;
      inFlight++;
      try {
        if (lanes === undefined) await next();
        else await inTurn(lanes, c.get("grant")?.name ?? "", c.req.raw, next);
      } finally {
        inFlight--;
      }
    },
    full: () => inFlight >= max,
    refuseEarly: function refuseEarly(c, next) {
      if (inFlight >= max) return Promise.resolve(errorResponse(c, OVERLOADED));
      if (lanes !== undefined && refusesNow(lanes, c.get("grant")?.name ?? "")) return Promise.resolve(errorResponse(c, FairScheduler.refusal));
      return next();
    },
  };
}

/** The answer to a request refused by {@linkcode shedWhenFull}, made once. */
const OVERLOADED_BODY = JSON.stringify(OVERLOADED.toJSON());

/**
 * Has `app` answer a request for `/v1/` with 429 `overloaded` at once while `limits` is full,
 * before routing it, checking its token or running any middleware: under overload most requests
 * are refused, and the thread that reads every connection spends on each refusal what the guests
 * then lack (served, about 17 µs of CPU here against 37 through the middleware). It is still
 * counted in `metrics` under its route and status, and recorded in `audit`, without a token.
 * Requests refused only because their token's queue is too long are refused by `refuseEarly`,
 * which knows the token.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * const app = new Hono<Env>();
 * const limits = signerLimits(256);
 * shedWhenFull(app, limits, new Metrics());
 * ```
 */
export function shedWhenFull(app: Hono<Env>, limits: SignerLimits, metrics: Metrics, audit?: AuditTrail): void {
  const fetch = app.fetch;
  app.fetch = (request, env, executionCtx) => {
    if (!limits.full()) return fetch(request, env, executionCtx);
    const path = getPath(request);
    if (!path.startsWith("/v1/")) return fetch(request, env, executionCtx);
    // The route pattern it would have taken, for the metrics and the audit record.
    const route = app.router.match(request.method, path)[0].at(-1)?.[0][1].path ?? "";
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    const requestId = requestIdOf(request.headers.get("X-Request-Id"), audit);
    if (requestId !== undefined) headers["X-Request-Id"] = requestId;
    metrics.requestStarted();
    metrics.requestEnded({ route, method: request.method, status: OVERLOADED.status, seconds: 0 });
    if (audit !== undefined && requestId !== undefined) {
      recordShed(audit, request, (env as Env["Bindings"] | undefined)?.remoteAddr, { requestId, route, status: OVERLOADED.status, error: OVERLOADED.code });
    }
    return new Response(OVERLOADED_BODY, { status: OVERLOADED.status, headers });
  };
}

/**
 * {@linkcode signerLimits}' `inFlight` alone: at most `max` requests through at once, more answer
 * 429 `overloaded`.
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
  return signerLimits(max).inFlight;
}

/**
 * Runs `next` as one call of `scheduler`, in its token's lane: tokens take turns, so one client
 * sending many requests at once waits for its own, not another token's. The call is dropped if
 * `request`'s signal aborts while it is queued: a served request's signal aborts when its client closes the
 * connection (deno.json opts in to `no-legacy-abort`, so it no longer also aborts after every
 * answer, and Deno prints no warning for listening to it).
 */
function inTurn(lanes: TokenLanes, token: string, request: Request, next: () => Promise<void>): Promise<void> {
  let lane = lanes.byToken.get(token);
  if (lane === undefined) lanes.byToken.set(token, lane = lanes.scheduler.lane());
  // The request itself as the options: the scheduler reads its signal only when the call has to
  // queue, and a wrapper with a getter, made per request, cost about 5 us of CPU each.
  return lane.run(next, request);
}

/** Whether a call of `token`'s lane would be refused now; one of a token with no lane yet, as a new lane's. */
function refusesNow(lanes: TokenLanes, token: string): boolean {
  const lane = lanes.byToken.get(token);
  return lane === undefined ? lanes.scheduler.refusesNewLane() : lane.refuses();
}

/** A scheduler's lanes, one per token name (tokens.json bounds how many). */
interface TokenLanes {
  scheduler: FairScheduler;
  byToken: Map<string, Lane>;
}
