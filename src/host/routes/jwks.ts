/**
 * The published JWK Set: `GET /.well-known/jwks.json` (no token) and `PUT`/`DELETE
 * /v1/keys/{id}/jwks`, which put a key into it or take it out (full-scope tokens).
 *
 * @module
 */

import { Hono } from "hono";
import type { Env } from "../_env.ts";
import type { JwksPublisher } from "../jwks.ts";
import type { Metrics } from "../metrics.ts";
import { fullScope, permittedKey } from "../middleware/auth.ts";
import type { KeyRoutesOptions } from "./keys.ts";

/** How long verifiers and caches may keep the JWK Set. */
export const JWKS_CACHE_CONTROL = "public, max-age=300";

/**
 * `GET /jwks.json`, to mount at `/.well-known` outside `authenticate`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { JwksPublisher } from "../jwks.ts";
 * import type { SignerClient } from "../../core/signer_client.ts";
 * declare const signer: SignerClient;
 * const app = new Hono<Env>();
 * app.route("/.well-known", jwksRoute(new JwksPublisher(signer, undefined)));
 * ```
 */
export function jwksRoute(jwks: JwksPublisher): Hono<Env> {
  return new Hono<Env>().get("/jwks.json", async (c) => {
    return c.json(await jwks.document(), 200, { "Cache-Control": JWKS_CACHE_CONTROL });
  });
}

/** What the marking routes work with. */
export interface JwksMarkOptions extends Pick<KeyRoutesOptions, "inFlight" | "keys"> {
  jwks: JwksPublisher;
  metrics: Metrics;
}

/**
 * `PUT` and `DELETE /:id/jwks`, to mount at `/v1/keys` behind `authenticate` when there is a key
 * store to keep the set in.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { JwksPublisher } from "../jwks.ts";
 * import { Metrics } from "../metrics.ts";
 * import { inFlightLimit } from "../middleware/in_flight.ts";
 * import type { SealedKeys } from "../../core/sealed_keys.ts";
 * import type { SignerClient } from "../../core/signer_client.ts";
 * declare const signer: SignerClient;
 * declare const keys: SealedKeys;
 * const app = new Hono<Env>();
 * app.route("/v1/keys", jwksMarkRoutes({ jwks: new JwksPublisher(signer, keys), metrics: new Metrics(), inFlight: inFlightLimit(256) }));
 * ```
 */
export function jwksMarkRoutes(options: JwksMarkOptions): Hono<Env> {
  const { jwks, metrics, inFlight, keys } = options;
  const admin = fullScope("publishing keys in the JWKS");
  return new Hono<Env>()
    .put("/:id/jwks", admin, permittedKey(keys), inFlight, async (c) => {
      const { id } = c.req.valid("param");
      await metrics.time("jwks", () => jwks.mark(id, true));
      return c.body(null, 204);
    })
    .delete("/:id/jwks", admin, permittedKey(keys), inFlight, async (c) => {
      const { id } = c.req.valid("param");
      await metrics.time("jwks", () => jwks.mark(id, false));
      return c.body(null, 204);
    });
}
