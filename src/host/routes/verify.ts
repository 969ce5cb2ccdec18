/**
 * `POST /v1/keys/{id}/verify`: checks a signature with the key's public half. BoringSSL checks it,
 * in the guest, like every other cryptographic operation; the guest is given the public key and
 * needs no private key loaded.
 *
 * @module
 */

import { hash } from "node:crypto";
import { Hono } from "hono";
import type { Env } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";
import { permittedKey } from "../middleware/auth.ts";
import { jsonBody } from "../middleware/validate.ts";
import { decodeBase64, VerifyBody } from "../schemas.ts";
import { signRequestOf, type SignRouteOptions } from "./sign.ts";

/**
 * The verify route, to mount at `/v1/keys` behind `authenticate`. Answers `{valid}`; a signature
 * that is not one (wrong length, bad DER) is `valid: false`, not an error.
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
 * app.route("/v1/keys", verifyRoute({ signer, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536, audited: false }));
 * ```
 */
export function verifyRoute(options: SignRouteOptions): Hono<Env> {
  const { signer, keys, metrics, inFlight, audited } = options;
  return new Hono<Env>().post("/:id/verify", permittedKey(keys, "read"), jsonBody(VerifyBody, options), inFlight, async (c) => {
    const { id: keyId } = c.req.valid("param");
    const { signature: signatureText, ...body } = c.req.valid("json");
    c.get("audit").algorithm = body.algorithm;
    const request = signRequestOf(keyId, body, (message) => {
      if (audited) c.get("audit").messageSha256 = hash("sha256", message, "hex");
    });
    const signature = decodeBase64(signatureText);
    if (signature === undefined) throw new KeycellError("bad_request", "signature must be standard padded base64");
    const { publicKey } = await metrics.time("get", () => signer.getKey(keyId));
    // An algorithm of the other family is the guest's WRONG_KEY_TYPE: 400, as for signing.
    const valid = await metrics.time("verify", () => signer.verify({ ...request, publicKey, signature }));
    metrics.verification(body.algorithm, valid);
    return c.json({ valid });
  });
}
