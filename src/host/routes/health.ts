/**
 * The probes: `GET /livez` (the process runs), `GET /readyz` and `GET /healthz` (the guest and the
 * key store answer), for load balancers and orchestrators.
 *
 * @module
 */

import { Hono } from "hono";
import type { Env } from "../_env.ts";
import { KeycellError } from "../../core/errors.ts";
import type { Metrics } from "../metrics.ts";
import type { SignerClient } from "../../core/signer_client.ts";

/**
 * How long `/readyz` and `/healthz` wait for the signer before they answer 503.
 *
 * @example
 * ```ts
 * import { HEALTH_TIMEOUT_MS } from "./health.ts";
 *
 * console.log(`a probe waits at most ${HEALTH_TIMEOUT_MS} ms`);
 * ```
 */
export const HEALTH_TIMEOUT_MS = 1000;

/**
 * The probes' paths; the audit log leaves them out (they are asked every few seconds).
 *
 * @example
 * ```ts
 * import { PROBE_ROUTES } from "./health.ts";
 *
 * console.log(PROBE_ROUTES.includes("/livez")); // true
 * ```
 */
export const PROBE_ROUTES: readonly string[] = ["/livez", "/readyz", "/healthz"];

/**
 * The probe routes, to mount at `/` without authentication and outside the in-flight limit, so a
 * busy server still answers them and never with 429:
 *
 * - `/livez`: 200 `{status: "ok"}` while the process can answer HTTP at all; it asks nothing of the
 *   signer, so a slow guest or store never gets a live server restarted.
 * - `/readyz` and `/healthz` (the older name, kept): 200 `{status: "ok", signer}` when the guest and
 *   the key store answer within {@linkcode HEALTH_TIMEOUT_MS}, else 503 `signer_unavailable`.
 *   Probes that arrive while a check is under way wait for that one, so a stuck signer is not sent
 *   one check per probe.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * import type { SignerClient } from "../../core/signer_client.ts";
 * declare const signer: SignerClient;
 * const app = new Hono<Env>();
 * app.route("/", healthRoutes(signer, new Metrics()));
 * ```
 */
export function healthRoutes(signer: SignerClient, metrics: Metrics): Hono<Env> {
  let checking: Promise<void> | undefined;
  const check = () =>
    checking ??= metrics.time("health", () => signer.health()).finally(() => {
      checking = undefined;
    });
  const ready = async () => {
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
  };
  return new Hono<Env>()
    .get("/livez", (c) => c.json({ status: "ok" }))
    .get("/readyz", async (c) => (await ready(), c.json({ status: "ok", signer: signer.mode })))
    .get("/healthz", async (c) => (await ready(), c.json({ status: "ok", signer: signer.mode })));
}
