/**
 * `/v1/keys`: listing, reading, generating and deleting keys.
 *
 * @module
 */

import { Hono, type MiddlewareHandler } from "hono";
import { type Env, grantOf, keyJson } from "../_env.ts";
import { mayUse } from "../auth.ts";
import type { Metrics } from "../metrics.ts";
import { fullScope, permittedKey } from "../middleware/auth.ts";
import { jsonBody, query } from "../middleware/validate.ts";
import { GenerateBody, PageQuery } from "../schemas.ts";
import type { SignerClient } from "../../core/signer_client.ts";
import type { SealedKeys } from "../../core/sealed_keys.ts";

/** What the key routes work with. */
export interface KeyRoutesOptions {
  signer: SignerClient;
  /** The sealed key store, for paged listing; without it, keys are listed from the guest. */
  keys?: SealedKeys;
  metrics: Metrics;
  /** The app's one in-flight limit, put before every signer call. */
  inFlight: MiddlewareHandler<Env>;
  maxBodyBytes: number;
}

/**
 * The key routes, to mount at `/v1/keys` behind `authenticate`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * import { inFlightLimit } from "../middleware/in_flight.ts";
 * import type { SignerClient } from "../../core/signer_client.ts";
 * declare const signer: SignerClient;
 * const app = new Hono<Env>();
 * app.route("/v1/keys", keyRoutes({ signer, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536 }));
 * ```
 */
export function keyRoutes(options: KeyRoutesOptions): Hono<Env> {
  const { signer, keys, metrics, inFlight, maxBodyBytes } = options;
  return new Hono<Env>()
    .get("/", query(PageQuery), inFlight, async (c) => {
      const grant = grantOf(c);
      if (keys === undefined) {
        const all = await metrics.time("list", () => signer.listKeys());
        return c.json({ keys: all.filter((k) => mayUse(grant, k.id)).map(keyJson) });
      }
      const { limit, cursor } = c.req.valid("query");
      // A scoped token's page is taken among its own keys, so neither the page nor its cursor
      // names a key outside its scope.
      const ids = grant.keys === "*" ? undefined : grant.keys;
      const page = await metrics.time("list", () => keys.listPage({ limit, cursor, ids }));
      return c.json({ keys: page.keys.map(keyJson), ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}) });
    })
    .get("/:id", permittedKey(), inFlight, async (c) => {
      const { id } = c.req.valid("param");
      return c.json(keyJson(await metrics.time("get", () => signer.getKey(id))));
    })
    .post("/", fullScope("generating keys"), jsonBody(GenerateBody, maxBodyBytes), inFlight, async (c) => {
      const { keySpec } = c.req.valid("json");
      c.get("audit").keySpec = keySpec;
      const key = await metrics.time("generate", () => signer.generate(keySpec));
      c.get("audit").keyId = key.id;
      return c.json(keyJson(key), 201);
    })
    .delete("/:id", fullScope("deleting keys"), permittedKey(), inFlight, async (c) => {
      const { id } = c.req.valid("param");
      await metrics.time("delete", () => signer.deleteKey(id));
      return c.body(null, 204);
    });
}
