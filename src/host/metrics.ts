/**
 * Counters and latency sums in the Prometheus text format. Labels come from fixed sets (route
 * patterns, status codes, algorithm names), never from request text, so their number stays bounded.
 *
 * @module
 */

/**
 * A small metrics registry.
 *
 * @example
 * ```ts
 * const metrics = new Metrics();
 * metrics.count("keycell_http_requests_total", { route: "/healthz", status: "200" });
 * console.log(metrics.render());
 * ```
 */
export class Metrics {
  /** By metric name, then by the label values joined with NUL (cheap to build on every request). */
  readonly #counters = new Map<string, Map<string, { labels: Record<string, string>; value: number }>>();
  readonly #help = new Map<string, string>([
    ["keycell_http_requests_total", "HTTP requests by route pattern and status."],
    ["keycell_signatures_total", "Signatures made, by algorithm."],
    ["keycell_verifications_total", "Signatures checked with a public key, by algorithm and outcome."],
    ["keycell_token_requests_total", "Authenticated requests, by token name (from tokens.json) and status."],
    ["keycell_signer_seconds_sum", "Seconds spent waiting for the signer, by operation."],
    ["keycell_signer_seconds_count", "Signer calls, by operation."],
    ["keycell_audit_write_failures_total", "Audit log writes that failed (their records are lost)."],
  ]);

  /** Adds `by` to a counter. */
  count(name: string, labels: Record<string, string>, by = 1): void {
    let series = this.#counters.get(name);
    if (series === undefined) {
      series = new Map();
      this.#counters.set(name, series);
    }
    let key = "";
    for (const label in labels) key += labels[label] + "\0";
    const counter = series.get(key);
    if (counter === undefined) series.set(key, { labels: { ...labels }, value: by });
    else counter.value += by;
  }

  /** Times a signer call. */
  async time<T>(operation: string, work: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await work();
    } finally {
      this.count("keycell_signer_seconds_sum", { operation }, (performance.now() - start) / 1000);
      this.count("keycell_signer_seconds_count", { operation });
    }
  }

  /** The registry in the Prometheus text exposition format. */
  render(): string {
    const lines: string[] = [];
    for (const [name, series] of this.#counters) {
      lines.push(`# HELP ${name} ${this.#help.get(name) ?? name}`, `# TYPE ${name} counter`);
      for (const { labels, value } of series.values()) lines.push(`${name}{${labelText(labels)}} ${value}`);
    }
    return lines.join("\n") + "\n";
  }
}

function labelText(labels: Record<string, string>): string {
  return Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, "_")}"`).join(",");
}
