/**
 * The internet-facing Hono app. It holds no key bytes: every key operation goes through a
 * {@linkcode SignerClient}, and only public keys and signatures come back.
 *
 * Built as Hono apps are: middleware from named factories (src/host/middleware/), and one sub-app
 * per feature (src/host/routes/) mounted with `app.route()`.
 *
 * @module
 */

import { Hono } from "hono";
import { TrieRouter } from "hono/router/trie-router";
import type { RouterRoute } from "hono/types";
import { openApiDocument } from "./openapi.ts";
import { type Env, errorResponse } from "./_env.ts";
import type { AuditTrail } from "./audit.ts";
import type { TokenStore } from "./auth.ts";
import { KeycellError } from "../core/errors.ts";
import { FairScheduler } from "../core/scheduler.ts";
import { Metrics } from "./metrics.ts";
import { auditTrail } from "./middleware/audit.ts";
import { authenticate } from "./middleware/auth.ts";
import { shedWhenFull, signerLimits } from "./middleware/in_flight.ts";
import { requestMetrics } from "./middleware/metrics.ts";
import { docsRoutes } from "./routes/docs.ts";
import { faultRoutes } from "./routes/faults.ts";
import { healthRoutes } from "./routes/health.ts";
import { JwksPublisher } from "./jwks.ts";
import { joseRoutes } from "./routes/jose.ts";
import { jwksMarkRoutes, jwksRoute } from "./routes/jwks.ts";
import { keyRoutes } from "./routes/keys.ts";
import { keyChangeRoutes } from "./routes/key_changes.ts";
import { metricsRoute } from "./routes/metrics.ts";
import { signRoute } from "./routes/sign.ts";
import { signBatchRoute } from "./routes/sign_batch.ts";
import { verifyRoute } from "./routes/verify.ts";
import { wrappedImportRoutes } from "./routes/wrapped_import.ts";
import type { SignerClient } from "../core/signer_client.ts";
import type { SealedKeys } from "../core/sealed_keys.ts";
import { getLog } from "../core/log.ts";

const log = getLog();

export type { Env } from "./_env.ts";

/** What the app needs. */
export interface AppOptions {
  signer: SignerClient;
  /**
   * The sealed key store behind the signer (usually the same object): adds paged listing, the
   * wrapping key and wrapped import. Without it, keys are listed from the guest.
   */
  keys?: SealedKeys;
  tokens: TokenStore;
  /** Largest request body accepted; larger ones answer 413. Default 64 KiB. */
  maxBodyBytes?: number;
  /** How long a request body may take to arrive whole; later, 408 `request_timeout`. Default 10 s. */
  bodyTimeoutMs?: number;
  /** Signer calls allowed in flight at once; more answer 429. Default 256. The probes are outside it. */
  maxInFlight?: number;
  /**
   * Signer calls wait their turn in a bounded queue (src/core/scheduler.ts, as in the key
   * server): `concurrency` run at once (enough per guest that a guest never waits for this
   * thread), and a call that would wait longer than `maxWaitMs` for one of those places answers
   * 503 `busy` with `Retry-After` at once (before its request is authenticated or its body read,
   * when the queue is already that long), one still queued after `maxWaitMs` answers so then,
   * and one whose client has gone is dropped before it reaches the guest. Without it, calls
   * within `maxInFlight` wait in the signer's own queues, however long. The probes are outside it.
   */
  queue?: { concurrency: number; maxWaitMs: number };
  metrics?: Metrics;
  /** Records every request but the probes (`/livez`, `/readyz`, `/healthz`). */
  audit?: AuditTrail;
  /**
   * Adds `POST /v1/faults/trap`, which makes the guest trap, for the isolation and recovery
   * tests. Off unless KEYCELL_FAULT_INJECTION=1.
   */
  faultInjection?: boolean;
}

/** Default of {@linkcode AppOptions.bodyTimeoutMs}. */
export const DEFAULT_BODY_TIMEOUT_MS = 10_000;

/** Default of {@linkcode AppOptions.maxBodyBytes}. */
const DEFAULT_MAX_BODY_BYTES = 64 * 1024;
/** Default of {@linkcode AppOptions.maxInFlight}. */
const DEFAULT_MAX_IN_FLIGHT = 256;

/**
 * Builds the keycell HTTP API. Every error it answers is keycell's JSON error shape.
 *
 * @example
 * ```ts
 * import { TokenStore } from "./auth.ts";
 * import type { SignerClient } from "../core/signer_client.ts";
 * declare const signer: SignerClient;
 * const app = createApp({ signer, tokens: TokenStore.fromEntries([]) });
 * Deno.serve({ port: 8787 }, app.fetch);
 * ```
 */
export function createApp(options: AppOptions): Hono<Env> {
  const { signer, keys, tokens } = options;
  const metrics = options.metrics ?? new Metrics();
  const jwks = new JwksPublisher(signer, keys);
  const limits = signerLimits(options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT, options.queue && new FairScheduler(options.queue));
  const routeOptions = {
    signer,
    keys,
    metrics,
    inFlight: limits.inFlight,
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
    jwks,
  };
  const signOptions = { ...routeOptions, audited: options.audit !== undefined };

  const app = new Hono<Env>();
  app.use(auditTrail(options.audit), requestMetrics(metrics));
  app.onError((err, c) => {
    if (err instanceof KeycellError) return errorResponse(c, err);
    log.error("unexpected error", { error: err, method: c.req.method, path: c.req.path });
    return errorResponse(c, new KeycellError("internal", "internal error"));
  });
  const methodsOf = routeMethods(app.routes);
  app.notFound((c) => {
    const allowed = methodsOf(c.req.path);
    if (allowed.length === 0 || allowed.includes(c.req.method)) return errorResponse(c, new KeycellError("not_found", "no such route"));
    const allow = allowed.join(", ");
    return errorResponse(c, new KeycellError("method_not_allowed", `this route takes ${allow}`), { Allow: allow });
  });

  app.route("/", healthRoutes(signer, metrics));
  app.route("/.well-known", jwksRoute(jwks));
  app.use("/v1/*", authenticate(tokens));
  // Its token known, but before its body is read: under overload most requests are refused.
  app.use("/v1/*", limits.refuseEarly);
  app.use("/metrics", authenticate(tokens));
  app.route("/metrics", metricsRoute(metrics));
  app.route("/v1/keys", keyRoutes(routeOptions));
  app.route("/v1/keys", signRoute(signOptions));
  app.route("/v1/keys", signBatchRoute(signOptions));
  app.route("/v1/keys", verifyRoute(signOptions));
  app.route("/v1/keys", joseRoutes(signOptions));
  if (keys !== undefined) {
    app.route("/v1", wrappedImportRoutes({ ...routeOptions, keys }));
    app.route("/v1/keys", jwksMarkRoutes(routeOptions));
    app.route("/v1/keys", keyChangeRoutes({ ...routeOptions, keys }));
  }
  if (options.faultInjection) app.route("/v1/faults", faultRoutes(signer));
  // Made on first request, from every route then registered (itself included).
  let openApi: ReturnType<typeof openApiDocument> | undefined;
  app.get("/openapi.json", (c) => c.json(openApi ??= openApiDocument(app.routes)));
  app.route("/docs", docsRoutes());
  // Each route's latency series starts at zero (middleware is registered under the method ALL).
  for (const { method, path } of app.routes) if (method !== "ALL") metrics.knownRoute(path, method);
  shedWhenFull(app, limits, metrics, options.audit);
  return app;
}

/**
 * The methods a path is served for (HEAD wherever GET is), asked only of a request no route
 * answered: 405 with them, or 404 when there are none. Not `hono/method-not-allowed`, which does
 * the same as a middleware around every request.
 */
function routeMethods(routes: readonly RouterRoute[]): (path: string) => string[] {
  let router: TrieRouter<Set<string>> | undefined;
  return (path) => {
    if (router === undefined) {
      // Built on first use, once every route is registered.
      const byPath = new Map<string, Set<string>>();
      for (const { method, path } of routes) {
        if (method === "ALL" || method === "HEAD") continue;
        const methods = byPath.get(path) ?? new Set();
        methods.add(method);
        if (method === "GET") methods.add("HEAD");
        byPath.set(path, methods);
      }
      router = new TrieRouter();
      for (const [path, methods] of byPath) router.add("ALL", path, methods);
    }
    const allowed = new Set<string>();
    for (const [methods] of router.match("ALL", path)[0]) for (const method of methods) allowed.add(method);
    return [...allowed];
  };
}
