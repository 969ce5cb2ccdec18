/**
 * `POST /v1/keys/{id}/sign`.
 *
 * @module
 */

import { hash } from "node:crypto";
import { Hono } from "hono";
import type { Env } from "../_env.ts";
import { ALGORITHMS } from "../../core/algorithms.ts";
import { KeycellError } from "../../core/errors.ts";
import { permittedKey } from "../middleware/auth.ts";
import { jsonBody } from "../middleware/validate.ts";
import { decodeBase64, SignBody } from "../schemas.ts";
import type { KeyRoutesOptions } from "./keys.ts";

/** What the sign route works with: the key routes' options, and whether an audit log records the message's hash. */
export interface SignRouteOptions extends Omit<KeyRoutesOptions, "keys"> {
  audited: boolean;
}

/**
 * The sign route, to mount at `/v1/keys` behind `authenticate`.
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
 * app.route("/v1/keys", signRoute({ signer, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536, audited: false }));
 * ```
 */
export function signRoute(options: SignRouteOptions): Hono<Env> {
  const { signer, metrics, inFlight, maxBodyBytes, audited } = options;
  return new Hono<Env>().post("/:id/sign", permittedKey(), jsonBody(SignBody, maxBodyBytes), inFlight, async (c) => {
    const { id: keyId } = c.req.valid("param");
    const body = c.req.valid("json");
    c.get("audit").algorithm = body.algorithm;
    const algorithm = ALGORITHMS[body.algorithm];
    const message = decodeBase64(body.message);
    if (message === undefined) throw new KeycellError("bad_request", "message must be standard padded base64");
    if (audited) c.get("audit").messageSha256 = hash("sha256", message, "hex");
    if (body.messageType === "DIGEST" && message.length !== algorithm.digestBytes) {
      throw new KeycellError(
        "bad_request",
        `a DIGEST for ${body.algorithm} must be ${algorithm.digestBytes} bytes, not ${message.length}`,
      );
    }
    if (body.signatureFormat !== undefined && algorithm.family !== "EC") {
      throw new KeycellError("bad_request", "signatureFormat applies to ECDSA algorithms only");
    }
    const signature = await metrics.time("sign", () =>
      signer.sign({
        keyId,
        algorithm: body.algorithm,
        messageType: body.messageType,
        message,
        signatureFormat: body.signatureFormat,
      }));
    metrics.signature(body.algorithm);
    return c.json({ keyId, algorithm: body.algorithm, signature: signature.toBase64() });
  });
}
