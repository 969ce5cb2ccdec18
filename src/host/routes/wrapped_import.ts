/**
 * `GET /v1/wrapping-key` and `POST /v1/keys/import`: keys imported wrapped to an RSA key whose
 * private half only the guest holds.
 *
 * @module
 */

import { Hono } from "hono";
import { type Env, keyJson } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";
import { fullScope } from "../middleware/auth.ts";
import { jsonBody } from "../middleware/validate.ts";
import { decodeBase64, ImportBody } from "../schemas.ts";
import { type SealedKeys, WRAPPED_KEY_OAEP_BYTES } from "../../core/sealed_keys.ts";
import type { KeyRoutesOptions } from "./keys.ts";

/** What the import routes work with. */
export interface WrappedImportOptions extends Omit<KeyRoutesOptions, "signer" | "keys"> {
  keys: SealedKeys;
}

/**
 * The wrapped-import routes, to mount at `/v1` behind `authenticate`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * import { inFlightLimit } from "../middleware/in_flight.ts";
 * import type { SealedKeys } from "../../core/sealed_keys.ts";
 * declare const keys: SealedKeys;
 * const app = new Hono<Env>();
 * app.route("/v1", wrappedImportRoutes({ keys, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536 }));
 * ```
 */
export function wrappedImportRoutes(options: WrappedImportOptions): Hono<Env> {
  const { keys, metrics, inFlight } = options;
  const admin = fullScope("importing keys");
  return new Hono<Env>()
    .get("/wrapping-key", admin, inFlight, async (c) => {
      const wrapping = await metrics.time("wrapping_key", () => keys.wrappingKey());
      return c.json({ publicKey: wrapping.spki.toBase64() });
    })
    .post("/keys/import", admin, jsonBody(ImportBody, options), inFlight, async (c) => {
      const { keySpec, wrappedKey, ...metadata } = c.req.valid("json");
      const wrapped = decodeBase64(wrappedKey);
      if (wrapped === undefined) throw new KeycellError("bad_request", "wrappedKey must be standard padded base64");
      if (wrapped.length <= WRAPPED_KEY_OAEP_BYTES + 8) {
        throw new KeycellError("bad_request", `wrappedKey must be the ${WRAPPED_KEY_OAEP_BYTES}-byte RSA-OAEP ciphertext followed by the key wrap`);
      }
      c.get("audit").keySpec = keySpec;
      if (metadata.name !== undefined) c.get("audit").keyName = metadata.name;
      const key = await metrics.time("import", () => keys.importWrapped(keySpec, wrapped, metadata));
      c.get("audit").keyId = key.id;
      return c.json(keyJson(key), 201);
    });
}
