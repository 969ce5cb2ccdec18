/**
 * `POST /v1/keys/{id}/jws` and `POST /v1/keys/{id}/jwt`: compact JWS (RFC 7515) and JWTs
 * (RFC 7519) signed in the guest. The host builds the signing input; the guest signs it as a RAW
 * message, ECDSA in the fixed-width `r || s` form JOSE uses.
 *
 * @module
 */

import { hash } from "node:crypto";
import { type Context, Hono } from "hono";
import type { Env } from "../_env.ts";
import { KEY_SPECS } from "../../core/algorithms.ts";
import { KeycellError } from "../../core/errors.ts";
import type { KeyInfo } from "../../core/signer_client.ts";
import {
  base64url,
  defaultJwsAlgorithm,
  type JwsAlgorithm,
  jwsSigningAlgorithm,
} from "../jose.ts";
import { permittedKey } from "../middleware/auth.ts";
import { jsonBody } from "../middleware/validate.ts";
import { JwsBody, JwtBody } from "../schemas.ts";
import type { SignRouteOptions } from "./sign.ts";

const UTF8 = new TextEncoder();

/**
 * The JOSE routes, to mount at `/v1/keys` behind `authenticate`.
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
 * app.route("/v1/keys", joseRoutes({ signer, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536, audited: false }));
 * ```
 */
export function joseRoutes(options: SignRouteOptions): Hono<Env> {
  const { signer, keys, metrics, inFlight, audited } = options;

  /** Signs `header.payload` with the key; answers the compact serialization. */
  async function signCompact(c: Context<Env>, key: KeyInfo, alg: JwsAlgorithm, header: Record<string, unknown>, payload: string) {
    const algorithm = jwsSigningAlgorithm(alg, key.keySpec);
    c.get("audit").algorithm = algorithm;
    const signingInput = `${base64url(UTF8.encode(JSON.stringify(header)))}.${payload}`;
    const message = UTF8.encode(signingInput);
    if (audited) c.get("audit").messageSha256 = hash("sha256", message, "hex");
    const ecdsa = KEY_SPECS[key.keySpec].family === "EC";
    const signature = await metrics.time(
      "sign",
      () => signer.sign({ keyId: key.id, algorithm, messageType: "RAW", message, ...(ecdsa ? { signatureFormat: "RAW" as const } : {}) }),
    );
    metrics.signature(algorithm);
    return `${signingInput}.${base64url(signature)}`;
  }

  return new Hono<Env>()
    .post("/:id/jws", permittedKey(keys, "sign"), jsonBody(JwsBody, options), inFlight, async (c) => {
      const { id: keyId } = c.req.valid("param");
      const { protectedHeader, payload } = c.req.valid("json");
      const key = await metrics.time("get", () => signer.getKey(keyId));
      const header = { ...protectedHeader, kid: protectedHeader.kid ?? keyId };
      return c.json({ jws: await signCompact(c, key, protectedHeader.alg, header, payload) });
    })
    .post("/:id/jwt", permittedKey(keys, "sign"), jsonBody(JwtBody, options), inFlight, async (c) => {
      const { id: keyId } = c.req.valid("param");
      const { claims, expiresIn, alg: asked } = c.req.valid("json");
      if (expiresIn !== undefined && claims.exp !== undefined) {
        throw new KeycellError("bad_request", "give exp in the claims or expiresIn, not both");
      }
      const iat = Math.floor(Date.now() / 1000);
      const exp = expiresIn === undefined ? undefined : iat + expiresIn;
      if (exp !== undefined && !Number.isSafeInteger(exp)) throw new KeycellError("bad_request", "expiresIn is too large");
      const key = await metrics.time("get", () => signer.getKey(keyId));
      const alg = asked ?? defaultJwsAlgorithm(key.keySpec);
      const payload = base64url(UTF8.encode(JSON.stringify({ ...claims, iat, ...(exp !== undefined ? { exp } : {}) })));
      return c.json({ jwt: await signCompact(c, key, alg, { alg, typ: "JWT", kid: keyId }, payload) });
    });
}
