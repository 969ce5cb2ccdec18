/**
 * keycell's metrics, kept by prom-client and exposed in the Prometheus text format.
 *
 * Every label value comes from a bounded set: route patterns (never request paths), HTTP methods
 * (others are counted as `other`), status codes, algorithm and operation names, and token names
 * from tokens.json. prom-client escapes label values (`\`, `"` and newlines), so a token name with
 * any of them still yields a well-formed exposition.
 *
 * Each instance has its own registry (no global state): a test can make as many as it likes.
 *
 * @module
 */

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { ALGORITHMS } from "../core/algorithms.ts";
import { VERSION } from "../core/version.ts";

/**
 * The signer calls timed in `keycell_signer_seconds`, registered at zero from the start.
 *
 * @example
 * ```ts
 * import { SIGNER_OPERATIONS } from "./metrics.ts";
 *
 * console.log(SIGNER_OPERATIONS.includes("sign")); // true
 * ```
 */
export const SIGNER_OPERATIONS = ["sign", "list", "get", "generate", "delete", "health", "wrapping_key", "import", "jwks", "rotate", "disable", "enable", "schedule_deletion", "cancel_deletion"] as const;

/**
 * A signer call timed by {@linkcode Metrics.time}.
 *
 * @example
 * ```ts
 * import type { SignerOperation } from "./metrics.ts";
 *
 * const operation: SignerOperation = "generate";
 * ```
 */
export type SignerOperation = (typeof SIGNER_OPERATIONS)[number];

/** Methods counted under their own name; any other (clients may send any token) is `other`. */
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);

/** Upper bounds of the HTTP latency buckets, in seconds: a P-256 signature takes about 0.3 ms. */
const HTTP_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** The signer's buckets go on to two minutes: an RSA-4096 generation in the guest takes seconds. */
const SIGNER_BUCKETS = [0.0001, ...HTTP_BUCKETS, 30, 60, 120];

/**
 * The server's metrics.
 *
 * @example
 * ```ts
 * import { Metrics } from "./metrics.ts";
 *
 * const metrics = new Metrics();
 * metrics.requestStarted();
 * metrics.requestEnded({ route: "/healthz", method: "GET", status: 200, seconds: 0.0004 });
 * const signature = await metrics.time("sign", () => Promise.resolve(new Uint8Array(64)));
 * metrics.signature("ECDSA_SHA_256");
 * console.log(await metrics.render());
 * ```
 */
export class Metrics {
  /** The `Content-Type` of {@linkcode Metrics.render}'s text. */
  readonly contentType: string;
  readonly #registry = new Registry();
  readonly #requests: Counter<"route" | "status">;
  readonly #duration: Histogram<"route" | "method">;
  readonly #inFlight: Gauge;
  readonly #tokens: Counter<"token" | "status">;
  readonly #signatures: Counter<"algorithm">;
  readonly #verifications: Counter<"algorithm" | "valid">;
  readonly #signer: Histogram<"operation">;
  readonly #auditFailures: Counter;

  constructor() {
    const registers = [this.#registry];
    this.contentType = this.#registry.contentType;
    this.#requests = new Counter({
      name: "keycell_http_requests_total",
      help: "HTTP requests by route pattern and status.",
      labelNames: ["route", "status"],
      registers,
    });
    this.#duration = new Histogram({
      name: "keycell_http_request_duration_seconds",
      help: "Time from a request's arrival to its answer, by route pattern and method.",
      labelNames: ["route", "method"],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.#inFlight = new Gauge({ name: "keycell_http_in_flight", help: "HTTP requests being answered now.", registers });
    this.#tokens = new Counter({
      name: "keycell_token_requests_total",
      help: "Authenticated requests, by token name (from tokens.json) and status.",
      labelNames: ["token", "status"],
      registers,
    });
    this.#signatures = new Counter({
      name: "keycell_signatures_total",
      help: "Signatures made, by algorithm.",
      labelNames: ["algorithm"],
      registers,
    });
    this.#verifications = new Counter({
      name: "keycell_verifications_total",
      help: "Signatures checked with a public key, by algorithm and outcome.",
      labelNames: ["algorithm", "valid"],
      registers,
    });
    this.#signer = new Histogram({
      name: "keycell_signer_seconds",
      help: "Time spent waiting for the signer, by operation.",
      labelNames: ["operation"],
      buckets: SIGNER_BUCKETS,
      registers,
    });
    this.#auditFailures = new Counter({
      name: "keycell_audit_write_failures_total",
      help: "Audit log writes that failed (their records are lost).",
      registers,
    });
    new Gauge({ name: "keycell_build_info", help: "keycell's version; always 1.", labelNames: ["version"], registers })
      .set({ version: VERSION }, 1);
    // Series whose labels are known now start at zero, so a rate() over them has a first sample.
    for (const [algorithm, row] of Object.entries(ALGORITHMS)) if (row.http) this.#signatures.inc({ algorithm }, 0);
    for (const operation of SIGNER_OPERATIONS) this.#signer.zero({ operation });
  }

  /**
   * Registers a route's latency series at zero. The app calls it for each route it serves, when it
   * is built: before any request, since it sets that series back to zero.
   */
  knownRoute(route: string, method: string): void {
    this.#duration.zero({ route, method: methodLabel(method) });
  }

  /** One more request is being answered. */
  requestStarted(): void {
    this.#inFlight.inc();
  }

  /**
   * A request was answered: counted by route pattern and status (and by token when one was
   * accepted), its latency observed by route pattern and method.
   */
  requestEnded(request: { route: string; method: string; status: number; seconds: number; token?: string }): void {
    this.#inFlight.dec();
    const status = String(request.status);
    this.#requests.inc({ route: request.route, status });
    this.#duration.observe({ route: request.route, method: methodLabel(request.method) }, request.seconds);
    if (request.token !== undefined) this.#tokens.inc({ token: request.token, status });
  }

  /** One signature was made with `algorithm`. */
  signature(algorithm: string): void {
    this.#signatures.inc({ algorithm });
  }

  /** One signature was checked with `algorithm`'s public key, and was `valid` or not. */
  verification(algorithm: string, valid: boolean): void {
    this.#verifications.inc({ algorithm, valid: String(valid) });
  }

  /** One audit record could not be written. */
  auditWriteFailed(): void {
    this.#auditFailures.inc();
  }

  /** Times a signer call, failed ones included. */
  async time<T>(operation: SignerOperation, work: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await work();
    } finally {
      this.#signer.observe({ operation }, (performance.now() - start) / 1000);
    }
  }

  /** Every series in the Prometheus text exposition format. */
  async render(): Promise<string> {
    return await this.#registry.metrics();
  }
}

function methodLabel(method: string): string {
  return METHODS.has(method) ? method : "other";
}
