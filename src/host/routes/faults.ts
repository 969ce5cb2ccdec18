/**
 * `POST /v1/faults/trap`: makes the guest trap, for the isolation and recovery tests. Mounted only
 * when fault injection is on (KEYCELL_FAULT_INJECTION=1).
 *
 * @module
 */

import { Hono } from "hono";
import type { Env } from "../_env.ts";
import { fullScope } from "../middleware/auth.ts";
import type { SignerClient } from "../../core/signer_client.ts";

/**
 * The fault routes, to mount at `/v1/faults` behind `authenticate`; they need a full-scope token.
 * The trap's error is the answer (500 `internal`), as for any trapped request.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import type { SignerClient } from "../../core/signer_client.ts";
 * declare const signer: SignerClient;
 * const app = new Hono<Env>();
 * if (Deno.env.get("KEYCELL_FAULT_INJECTION") === "1") app.route("/v1/faults", faultRoutes(signer));
 * ```
 */
export function faultRoutes(signer: SignerClient): Hono<Env> {
  return new Hono<Env>().post("/trap", fullScope("fault injection"), async () => {
    throw await signer.injectTrap();
  });
}
