/**
 * `GET /healthz`: whether the signer answers, for load balancers.
 *
 * @module
 */

import { Hono } from "hono";
import type { Env } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";
import type { Metrics } from "../metrics.ts";
import type { SignerClient } from "../../core/signer_client.ts";

/** How long `/healthz` waits for the signer before it answers 503. */
export const HEALTH_TIMEOUT_MS = 1000;

/**
 * The health route, to mount at `/healthz` without authentication and outside the in-flight
 * limit: a busy server still answers it, 200 when the signer answers within
 * {@linkcode HEALTH_TIMEOUT_MS}, else 503 `signer_unavailable`. Probes that arrive while a check
 * is under way wait for that one, so a stuck signer is not sent one check per probe.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * import type { SignerClient } from "../../core/signer_client.ts";
 * declare const signer: SignerClient;
 * const app = new Hono<Env>();
 * app.route("/healthz", healthRoute(signer, new Metrics()));
 * ```
 */
export function healthRoute(signer: SignerClient, metrics: Metrics): Hono<Env> {
  let checking: Promise<void> | undefined;
  const check = () =>
    checking ??= metrics.time("health", () => signer.health()).finally(() => {
      checking = undefined;
    });
  return new Hono<Env>().get("/", async (c) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new KeycellError("signer_unavailable", `the signer did not answer within ${HEALTH_TIMEOUT_MS} ms`)),
        HEALTH_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([check(), late]);
    } finally {
      clearTimeout(timer);
    }
    return c.json({ status: "ok", signer: signer.mode });
  });
}
