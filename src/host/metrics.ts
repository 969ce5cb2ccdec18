/**
 * keycell's metrics, exposed in the Prometheus text format by the registry of
 * `../core/metrics_registry.ts`.
 *
 * Every label value comes from a bounded set: route patterns (never request paths), HTTP methods
 * (others are counted as `other`), status codes, algorithm and operation names, and token names
 * from tokens.json. Label values are escaped (`\`, `"` and newlines), so a token name with any of
 * them still yields a well-formed exposition.
 *
 * Each instance has its own registry (no global state): a test can make as many as it likes.
 *
 * @module
 */

import { type Counter, type Histogram, Registry } from "../core/metrics_registry.ts";
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
export const SIGNER_OPERATIONS = ["sign", "verify", "list", "get", "generate", "delete", "health", "wrapping_key", "import", "jwks", "rotate", "disable", "enable", "schedule_deletion", "cancel_deletion"] as const;

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
 * console.log(metrics.render());
 * ```
 */
export class Metrics {
  /** The `Content-Type` of {@linkcode Metrics.render}'s text. */
  readonly contentType: string;
  readonly #registry = new Registry();
  readonly #requests: Counter<readonly ["route", "status"]>;
  readonly #duration: Histogram<readonly ["route", "method"]>;
  #inFlight = 0;
  readonly #tokens: Counter<readonly ["token", "status"]>;
  readonly #signatures: Counter<readonly ["algorithm"]>;
  readonly #verifications: Counter<readonly ["algorithm", "valid"]>;
  readonly #signer: Histogram<readonly ["operation"]>;
  #auditFailures = 0;

  constructor() {
    const registry = this.#registry;
    this.contentType = registry.contentType;
    this.#requests = registry.counter("keycell_http_requests_total", "HTTP requests by route pattern and status.", ["route", "status"]);
    this.#duration = registry.histogram(
      "keycell_http_request_duration_seconds",
      "Time from a request's arrival to its answer, by route pattern and method.",
      ["route", "method"],
      HTTP_BUCKETS,
    );
    registry.read("gauge", "keycell_http_in_flight", "HTTP requests being answered now.", () => this.#inFlight);
    this.#tokens = registry.counter("keycell_token_requests_total", "Authenticated requests, by token name (from tokens.json) and status.", ["token", "status"]);
    this.#signatures = registry.counter("keycell_signatures_total", "Signatures made, by algorithm.", ["algorithm"]);
    this.#verifications = registry.counter("keycell_verifications_total", "Signatures checked with a public key, by algorithm and outcome.", ["algorithm", "valid"]);
    this.#signer = registry.histogram("keycell_signer_seconds", "Time spent waiting for the signer, by operation.", ["operation"], SIGNER_BUCKETS);
    registry.read("counter", "keycell_audit_write_failures_total", "Audit log writes that failed (their records are lost).", () => this.#auditFailures);
    registry.gauge("keycell_build_info", "keycell's version; always 1.", ["version"]).set([VERSION], 1);
    // Series whose labels are known now start at zero, so a rate() over them has a first sample.
    for (const [algorithm, row] of Object.entries(ALGORITHMS)) if (row.http) this.#signatures.inc([algorithm], 0);
    for (const operation of SIGNER_OPERATIONS) this.#signer.init([operation]);
  }

  /** Registers a route's latency series at zero. The app calls it for each route it serves, when it is built. */
  knownRoute(route: string, method: string): void {
    this.#duration.init([route, methodLabel(method)]);
  }

  /** One more request is being answered. */
  requestStarted(): void {
    this.#inFlight++;
  }

  /**
   * A request was answered: counted by route pattern and status (and by token when one was
   * accepted), its latency observed by route pattern and method.
   */
  requestEnded(request: { route: string; method: string; status: number; seconds: number; token?: string }): void {
    this.#inFlight--;
    const status = String(request.status);
    this.#requests.inc([request.route, status]);
    this.#duration.observe([request.route, methodLabel(request.method)], request.seconds);
    if (request.token !== undefined) this.#tokens.inc([request.token, status]);
  }

  /** One signature was made with `algorithm`. */
  signature(algorithm: string): void {
    this.#signatures.inc([algorithm]);
  }

  /** One signature was checked with `algorithm`'s public key, and was `valid` or not. */
  verification(algorithm: string, valid: boolean): void {
    this.#verifications.inc([algorithm, String(valid)]);
  }

  /** One audit record could not be written. */
  auditWriteFailed(): void {
    this.#auditFailures++;
  }

  /** Times a signer call, failed ones included. */
  async time<T>(operation: SignerOperation, work: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await work();
    } finally {
      this.#signer.observe([operation], (performance.now() - start) / 1000);
    }
  }

  /** Every series in the Prometheus text exposition format. */
  render(): string {
    return this.#registry.render();
  }
}

function methodLabel(method: string): string {
  return METHODS.has(method) ? method : "other";
}
