/**
 * `POST /v1/keys/{name}/rotate`, `/disable`, `/enable`, `/schedule-deletion` and
 * `/cancel-deletion`: the life of a named key, for tokens scoped to every key (as making and
 * deleting keys are).
 *
 * @module
 */

import { Hono, type MiddlewareHandler } from "hono";
import { type Env, keyDetailsJson } from "../_env.ts";
import type { Metrics } from "../metrics.ts";
import { fullScope, permittedKey } from "../middleware/auth.ts";
import { type BodyLimits, jsonBody } from "../middleware/validate.ts";
import { ScheduleDeletionBody } from "../schemas.ts";
import type { KeyAction, KeyChange } from "../../core/key_service.ts";
import type { SealedKeys } from "../../core/sealed_keys.ts";
import type { JwksPublisher } from "../jwks.ts";

/** What the key change routes work with. */
export interface KeyChangeRoutesOptions extends BodyLimits {
  keys: SealedKeys;
  metrics: Metrics;
  inFlight: MiddlewareHandler<Env>;
  /** The published JWK Set, made again after a rotation (which publishes a published key's new version). */
  jwks?: JwksPublisher;
}

/** Each route's path and the change it makes (the paths AWS KMS's operations would have). */
const SIMPLE: ReadonlyArray<[path: string, action: Exclude<KeyAction, "schedule_deletion">]> = [
  ["rotate", "rotate"],
  ["disable", "disable"],
  ["enable", "enable"],
  ["cancel-deletion", "cancel_deletion"],
];

/**
 * The key change routes, to mount at `/v1/keys` behind `authenticate` when there is a key store.
 * Each answers the key as it is after the change (as `GET /v1/keys/{name}` does).
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * import { inFlightLimit } from "../middleware/in_flight.ts";
 * import type { SealedKeys } from "../../core/sealed_keys.ts";
import type { JwksPublisher } from "../jwks.ts";
 * declare const keys: SealedKeys;
 * const app = new Hono<Env>();
 * app.route("/v1/keys", keyChangeRoutes({ keys, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536 }));
 * ```
 */
export function keyChangeRoutes(options: KeyChangeRoutesOptions): Hono<Env> {
  const { keys, metrics, inFlight, jwks } = options;
  const app = new Hono<Env>();
  const change = async (ref: string, what: KeyChange) => keyDetailsJson(await metrics.time(what.action, () => keys.changeKey(ref, what)));
  for (const [path, action] of SIMPLE) {
    app.post(`/:id/${path}`, fullScope("changing keys"), permittedKey(keys), inFlight, async (c) => {
      const answer = await change(c.req.valid("param").ref, { action });
      // A rotation's record names the version it made.
      if (action === "rotate") {
        c.get("audit").keyId = answer.primary as string;
        jwks?.forget();
      }
      return c.json(answer);
    });
  }
  app.post(
    "/:id/schedule-deletion",
    fullScope("changing keys"),
    permittedKey(keys),
    jsonBody(ScheduleDeletionBody, options),
    inFlight,
    async (c) => {
      const { pendingWindowDays } = c.req.valid("json");
      return c.json(await change(c.req.valid("param").ref, { action: "schedule_deletion", pendingWindowDays }));
    },
  );
  return app;
}
