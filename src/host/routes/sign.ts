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
import type { SignRequest } from "../../core/signer_client.ts";
import type { KeyRoutesOptions } from "./keys.ts";

/**
 * What the sign route works with: the key routes' options (with `keys`, names are known), and
 * whether an audit log records the message's hash.
 */
export interface SignRouteOptions extends KeyRoutesOptions {
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
  const { signer, keys, metrics, inFlight, audited } = options;
  return new Hono<Env>().post("/:id/sign", permittedKey(keys, "sign"), jsonBody(SignBody, options), inFlight, async (c) => {
    const { id: keyId } = c.req.valid("param");
    const body = c.req.valid("json");
    c.get("audit").algorithm = body.algorithm;
    const request = signRequestOf(keyId, body, (message) => {
      if (audited) c.get("audit").messageSha256 = hash("sha256", message, "hex");
    });
    const signature = await metrics.time("sign", () => signer.sign(request));
    metrics.signature(body.algorithm);
    return c.json({ keyId, algorithm: body.algorithm, signature: signature.toBase64() });
  });
}

/**
 * The signer's request for a sign body, checked as far as the host can without the key: the
 * message's base64, a digest's length, `signatureFormat` for ECDSA only (400 `bad_request`
 * otherwise). `decoded` sees the message bytes as soon as they are decoded, for the audit record.
 *
 * @example
 * ```ts
 * import { signRequestOf } from "./sign.ts";
 *
 * const request = signRequestOf("ab".repeat(32), { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" });
 * request.message; // Uint8Array [0x68, 0x69]
 * ```
 */
export function signRequestOf(keyId: string, body: SignBody, decoded?: (message: Uint8Array) => void): SignRequest {
  const algorithm = ALGORITHMS[body.algorithm];
  const message = decodeBase64(body.message);
  if (message === undefined) throw new KeycellError("bad_request", "message must be standard padded base64");
  decoded?.(message);
  if (body.messageType === "DIGEST" && message.length !== algorithm.digestBytes) {
    throw new KeycellError(
      "bad_request",
      `a DIGEST for ${body.algorithm} must be ${algorithm.digestBytes} bytes, not ${message.length}`,
    );
  }
  if (body.signatureFormat !== undefined && algorithm.family !== "EC") {
    throw new KeycellError("bad_request", "signatureFormat applies to ECDSA algorithms only");
  }
  return { keyId, algorithm: body.algorithm, messageType: body.messageType, message, signatureFormat: body.signatureFormat };
}
