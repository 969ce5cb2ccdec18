/**
 * Bounds on the signer calls the app has in flight and on how long they wait for a guest.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import { type Env, errorResponse } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";
import { FairScheduler } from "../../core/scheduler.ts";

/**
 * Lets at most `max` requests through at once; more answer 429 `overloaded` at once rather than
 * queue behind the signer. One limiter is shared by every route it is put on; put it after the
 * request's validation, so a body still arriving holds no place.
 *
 * With `scheduler`, each request's handler is one call of it, in a lane of its own, so the wait
 * for a guest is bounded as the key server bounds it: a request that would wait longer than the
 * scheduler's `maxWaitMs` (judged from the calls ahead of it and how often calls finish) answers
 * 503 `busy` with `Retry-After` at once, one still queued when that has passed answers so then,
 * and one whose client has gone (the request's signal aborted: the connection closed) is dropped
 * before its handler runs, so it never reaches the guest.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { type Env, errorResponse } from "../_env.ts";
 * import { FairScheduler } from "../../core/scheduler.ts";
 * import { permittedKey } from "./auth.ts";
 * const limit = inFlightLimit(256, new FairScheduler({ concurrency: 4, maxWaitMs: 5_000 }));
 * const keys = new Hono<Env>().get("/:id", permittedKey(), limit, (c) => c.text(c.req.valid("param").id));
 * ```
 */
export function inFlightLimit(max: number, scheduler?: FairScheduler): MiddlewareHandler<Env> {
  let inFlight = 0;
  return async function inFlightLimit(c, next) {
    if (inFlight >= max) throw new KeycellError("overloaded", "too many signing requests in flight; retry later");
    inFlight++;
    try {
      if (scheduler === undefined) await next();
      else await inTurn(scheduler, c.req.raw.signal, next);
    } finally {
      inFlight--;
    }
  };
}

/**
 * Runs `next` as one call of `scheduler`, in a lane that closes when `signal` aborts. A served
 * request's signal aborts when its client closes the connection (deno.json opts in to
 * `no-legacy-abort`, so it no longer also aborts after every answer, and Deno prints no warning
 * for listening to it).
 */
async function inTurn(scheduler: FairScheduler, signal: AbortSignal, next: () => Promise<void>): Promise<void> {
  const lane = scheduler.lane();
  // Abort events fire synchronously, so a call queued when its client goes is dropped at once.
  const gone = () => lane.close();
  signal.addEventListener("abort", gone, { once: true });
  if (signal.aborted) lane.close();
  try {
    await lane.run(next);
  } finally {
    signal.removeEventListener("abort", gone);
    lane.close();
  }
}

/**
 * Answers 503 `busy` at once, before the request is authenticated or its body read, when a
 * signer call submitted now to `scheduler` would be refused for its wait: under overload most
 * requests are refused, and one refused this early costs the thread that serves every connection
 * little beside the calls it accepts. Put it in front of every route that calls the signer; the
 * {@linkcode inFlightLimit} behind it still judges the call when it is submitted.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { type Env, errorResponse } from "../_env.ts";
 * import { FairScheduler } from "../../core/scheduler.ts";
 * const scheduler = new FairScheduler({ concurrency: 4, maxWaitMs: 5_000 });
 * const app = new Hono<Env>().use("/v1/*", refuseWhenBusy(scheduler));
 * ```
 */
export function refuseWhenBusy(scheduler: FairScheduler): MiddlewareHandler<Env> {
  return async function refuseWhenBusy(c, next) {
    if (scheduler.lane().refuses()) return errorResponse(c, FairScheduler.refusal);
    await next();
  };
}
