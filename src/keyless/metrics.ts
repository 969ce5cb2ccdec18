/**
 * The key server's metrics, exposed in the Prometheus text format (by the registry of
 * `../core/metrics_registry.ts`) on the key server's own metrics listener
 * (`KEYCELL_KEYSERVER_METRICS_LISTEN`).
 *
 * Every label value comes from a bounded set: the opcode names of {@linkcode Opcode} (any other
 * opcode is `other`) and the names of the Keyless error codes (`ok` on success). Each instance has
 * its own registry, so a test can make as many as it likes.
 *
 * @module
 */

import { type Counter, type Histogram, Registry } from "../core/metrics_registry.ts";
import { VERSION } from "../core/version.ts";
import { ErrorCode, Opcode } from "./codec.ts";

const OPCODE_NAMES = new Map<number, string>(Object.entries(Opcode).map(([name, code]) => [code, name]));
const ERROR_NAMES = new Map<number, string>(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/** Opcodes whose success series exist from the start, at zero: the ones TLS terminators send. */
const SIGN_OPCODES = Object.keys(Opcode).filter((name) => name.includes("_SIGN_"));

/** Upper bounds of the latency buckets, in seconds: a P-256 signature takes about 0.2 ms, RSA-4096 tens. */
const BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What the server can tell about itself when the metrics are read. */
export interface KeylessGauges {
  /** Connections open now. */
  connections(): number;
  /** Requests waiting for their turn or being answered. */
  load(): number;
  /** Connections closed at once because the cap was met, so far. */
  refusedConnections(): number;
  /** Requests refused (queue full or waited too long) or dropped (their connection had gone), so far. */
  refused(): number;
  dropped(): number;
}

/**
 * The key server's metrics.
 *
 * @example
 * ```ts
 * import { KeylessMetrics } from "./metrics.ts";
 * import { Opcode } from "./codec.ts";
 *
 * const metrics = new KeylessMetrics();
 * metrics.answered(Opcode.ECDSA_SIGN_SHA256, undefined, 0.0002);
 * console.log(metrics.render()); // keycell_keyless_requests_total{opcode="ECDSA_SIGN_SHA256",outcome="ok"} 1 …
 * ```
 */
export class KeylessMetrics {
  /** The `Content-Type` of {@linkcode KeylessMetrics.render}'s text. */
  readonly contentType: string;
  readonly #registry = new Registry();
  readonly #requests: Counter<readonly ["opcode", "outcome"]>;
  readonly #duration: Histogram<readonly ["opcode"]>;

  constructor() {
    const registry = this.#registry;
    this.contentType = registry.contentType;
    registry.gauge("keycell_build_info", "keycell's version; always 1", ["version"]).set([VERSION], 1);
    this.#requests = registry.counter(
      "keycell_keyless_requests_total",
      "Keyless requests answered, by opcode and outcome (ok, or the Keyless error answered)",
      ["opcode", "outcome"],
    );
    this.#duration = registry.histogram("keycell_keyless_request_seconds", "Time from a Keyless request's arrival to its answer, by opcode", ["opcode"], BUCKETS);
    for (const opcode of SIGN_OPCODES) {
      this.#requests.inc([opcode, "ok"], 0);
      this.#duration.init([opcode]);
    }
  }

  /**
   * Reads `gauges` whenever the metrics are rendered.
   *
   * @example
   * ```ts
   * import { KeylessMetrics } from "./metrics.ts";
   *
   * new KeylessMetrics().watch({ connections: () => 3, load: () => 0, refusedConnections: () => 0, refused: () => 0, dropped: () => 0 });
   * ```
   */
  watch(gauges: KeylessGauges): void {
    const registry = this.#registry;
    registry.read("gauge", "keycell_keyless_connections", "Keyless connections open", gauges.connections);
    registry.read("gauge", "keycell_keyless_in_flight", "Keyless requests waiting for their turn or being answered", gauges.load);
    // Counted by the server as it goes; read here, so they stay counters (they only grow).
    registry.read("counter", "keycell_keyless_connections_refused_total", "Connections closed at once because KEYCELL_KEYSERVER_MAX_CONNECTIONS were open", gauges.refusedConnections);
    registry.read("counter", "keycell_keyless_refused_total", "Requests refused: the queue was full, or they would have waited too long", gauges.refused);
    registry.read("counter", "keycell_keyless_dropped_total", "Requests dropped because their connection had gone", gauges.dropped);
  }

  /** Counts one answered request: `error` is the Keyless error answered, undefined on success. */
  answered(opcode: number | undefined, error: number | undefined, seconds: number): void {
    const name = opcode === undefined ? "none" : OPCODE_NAMES.get(opcode) ?? "other";
    const outcome = error === undefined ? "ok" : ERROR_NAMES.get(error) ?? "other";
    this.#requests.inc([name, outcome]);
    this.#duration.observe([name], seconds);
  }

  /** The metrics in the Prometheus text format. */
  render(): string {
    return this.#registry.render();
  }
}
