/**
 * `POST /v1/keys/{id}/sign-batch`: up to `MAX_BATCH` (src/host/schemas.ts) signatures with one key in one
 * request, each item answered on its own.
 *
 * @module
 */

import { hash } from "node:crypto";
import { Hono } from "hono";
import type { Env } from "../_env.ts";
import type { AuditBatchItem } from "../audit.ts";
import { ALGORITHMS, KEY_SPECS } from "../../core/algorithms.ts";
import { type ErrorCode, KeycellError } from "../../core/errors.ts";
import { permittedKey } from "../middleware/auth.ts";
import { jsonBody, parse } from "../middleware/validate.ts";
import { SignBatchBody, SignBody } from "../schemas.ts";
import { signRequestOf, type SignRouteOptions } from "./sign.ts";
import { getLog } from "../../core/log.ts";

const log = getLog();

/** Items of one batch signed at once: enough to keep a pool of guests busy, not all of it. */
const CONCURRENCY = 4;

/** One item's answer. */
export type BatchResult = { signature: string } | { error: { code: ErrorCode; message: string } };

/**
 * The batch sign route, to mount at `/v1/keys` behind `authenticate`. The key is looked up once
 * (an unknown key is the request's 404); then each item is checked and signed alone, so a bad item
 * gets its own `{error}` and the others their `{signature}`, in the items' order. The body limit
 * bounds the batch's bytes, `MAX_BATCH` its items.
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
 * app.route("/v1/keys", signBatchRoute({ signer, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536, audited: false }));
 * ```
 */
export function signBatchRoute(options: SignRouteOptions): Hono<Env> {
  const { signer, keys, metrics, inFlight, audited } = options;
  return new Hono<Env>().post("/:id/sign-batch", permittedKey(keys, "sign"), jsonBody(SignBatchBody, options), inFlight, async (c) => {
    const { id: keyId } = c.req.valid("param");
    const { batch } = c.req.valid("json");
    const key = await metrics.time("get", () => signer.getKey(keyId));
    const family = KEY_SPECS[key.keySpec].family;
    const audit: AuditBatchItem[] = batch.map(() => ({}));
    c.get("audit").batch = audit;

    const signOne = async (item: unknown, i: number): Promise<BatchResult> => {
      try {
        const body = parse(SignBody, item, `batch.${i}`);
        audit[i].algorithm = body.algorithm;
        const request = signRequestOf(keyId, body, (message) => {
          if (audited) audit[i].messageSha256 = hash("sha256", message, "hex");
        });
        if (ALGORITHMS[body.algorithm].family !== family) throw new KeycellError("bad_request", "the algorithm is not valid for this key");
        const signature = await metrics.time("sign", () => signer.sign(request));
        metrics.signature(body.algorithm);
        return { signature: signature.toBase64() };
      } catch (err) {
        const error = err instanceof KeycellError ? err : unexpected(err);
        audit[i].error = error.code;
        return error.toJSON();
      }
    };

    const results = new Array<BatchResult>(batch.length);
    let next = 0;
    const lane = async () => {
      for (let i = next++; i < batch.length; i = next++) results[i] = await signOne(batch[i], i);
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, batch.length) }, lane));
    return c.json({ keyId, results });
  });
}

function unexpected(err: unknown): KeycellError {
  log.error("unexpected error in a batch item", { error: err });
  return new KeycellError("internal", "internal error");
}
