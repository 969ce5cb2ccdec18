/**
 * A small Prometheus registry: counters, gauges and histograms kept as plain numbers, rendered in
 * the text exposition format (version 0.0.4) only when scraped.
 *
 * Recording is on every request's path, so it does as little as it can: a label set's series is
 * found through one `Map` lookup per label value (no key string built, no label object checked),
 * a counter adds to a number, a histogram adds to one bucket, its sum and its count. Label text is
 * escaped once, when a series is first seen.
 *
 * @example
 * ```ts
 * import { Registry } from "./metrics_registry.ts";
 *
 * const registry = new Registry();
 * const requests = registry.counter("app_requests_total", "Requests by route and status.", ["route", "status"]);
 * requests.inc(["/v1/items", "200"]);
 * console.log(registry.render()); // app_requests_total{route="/v1/items",status="200"} 1 …
 * ```
 *
 * @module
 */

/** The `Content-Type` of the Prometheus text format that {@linkcode Registry.render} writes. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * One value per label name, in the order of the names.
 *
 * @example
 * ```ts
 * import type { LabelValues } from "./metrics_registry.ts";
 *
 * const values: LabelValues<readonly ["route", "status"]> = ["/v1/items", "200"];
 * ```
 */
export type LabelValues<L extends readonly string[]> = { readonly [K in keyof L]: string };

/** A series' label text, escaped once: `a="x",b="y"` (empty without labels). */
interface Series {
  readonly labels: string;
}

/** What the registry holds: one metric, rendered as its `# HELP`, `# TYPE` and sample lines. */
interface Rendered {
  readonly name: string;
  render(): string;
}

/** The series of one metric, found by their label values through a tree of maps (one level per label). */
abstract class Family<L extends readonly string[], S extends Series> implements Rendered {
  readonly #root = new Map<string, unknown>();
  /** Every series in the order it was first seen, as the exposition lists them. */
  protected readonly series: S[] = [];

  constructor(readonly name: string, readonly help: string, readonly labelNames: L, private readonly create: (labels: string) => S) {
    if (labelNames.length === 0) this.series.push(create(""));
  }

  /** The series for `values`, made (at zero) the first time those values are seen. */
  protected find(values: LabelValues<L>): S {
    const last = values.length - 1;
    if (last < 0) return this.series[0];
    let node = this.#root;
    for (let i = 0; i < last; i++) {
      let next = node.get(values[i]) as Map<string, unknown> | undefined;
      if (next === undefined) node.set(values[i], next = new Map());
      node = next;
    }
    let found = node.get(values[last]) as S | undefined;
    if (found === undefined) {
      found = this.create(this.labelNames.map((name, i) => `${name}="${escapeLabelValue(values[i])}"`).join(","));
      node.set(values[last], found);
      this.series.push(found);
    }
    return found;
  }

  abstract render(): string;

  protected header(type: string): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${type}`;
  }
}

interface ValueSeries extends Series {
  value: number;
}

/** The samples of a counter or a gauge: `name{labels} value`. */
abstract class ValueFamily<L extends readonly string[]> extends Family<L, ValueSeries> {
  constructor(name: string, help: string, labelNames: L) {
    super(name, help, labelNames, (labels) => ({ labels, value: 0 }));
  }

  protected samples(type: string): string {
    return [this.header(type), ...this.series.map((s) => `${this.name}${braced(s.labels)} ${formatValue(s.value)}`)].join("\n");
  }
}

/**
 * A counter: made by {@linkcode Registry.counter}.
 *
 * @example
 * ```ts
 * import { Registry } from "./metrics_registry.ts";
 *
 * const signatures = new Registry().counter("app_signatures_total", "Signatures, by algorithm.", ["algorithm"]);
 * signatures.inc(["ES256"], 0); // the series exists at zero before the first signature
 * signatures.inc(["ES256"]);
 * ```
 */
export class Counter<L extends readonly string[]> extends ValueFamily<L> {
  /** Adds `by` (1 unless given) to the series for `values`. */
  inc(values: LabelValues<L>, by = 1): void {
    this.find(values).value += by;
  }

  /** The counter's lines of the exposition. */
  render(): string {
    return this.samples("counter");
  }
}

/**
 * A gauge: made by {@linkcode Registry.gauge}.
 *
 * @example
 * ```ts
 * import { Registry } from "./metrics_registry.ts";
 *
 * new Registry().gauge("app_build_info", "The version; always 1.", ["version"]).set(["1.2.3"], 1);
 * ```
 */
export class Gauge<L extends readonly string[]> extends ValueFamily<L> {
  /** Sets the series for `values` to `value`. */
  set(values: LabelValues<L>, value: number): void {
    this.find(values).value = value;
  }

  /** The gauge's lines of the exposition. */
  render(): string {
    return this.samples("gauge");
  }
}

interface HistogramSeries extends Series {
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  readonly counts: number[];
  sum: number;
  count: number;
}

/**
 * A histogram with fixed bucket bounds: made by {@linkcode Registry.histogram}.
 *
 * @example
 * ```ts
 * import { Registry } from "./metrics_registry.ts";
 *
 * const latency = new Registry().histogram("app_seconds", "Latency, by route.", ["route"], [0.001, 0.01, 0.1]);
 * latency.init(["/v1/items"]);
 * latency.observe(["/v1/items"], 0.004);
 * ```
 */
export class Histogram<L extends readonly string[]> extends Family<L, HistogramSeries> {
  readonly #bounds: readonly number[];

  constructor(name: string, help: string, labelNames: L, bounds: readonly number[]) {
    const slots = bounds.length + 1;
    super(name, help, labelNames, (labels) => ({ labels, counts: new Array(slots).fill(0), sum: 0, count: 0 }));
    this.#bounds = [...bounds];
  }

  /** Makes the series for `values` exist, at zero if it is new, so it is exposed before any observation. */
  init(values: LabelValues<L>): void {
    this.find(values);
  }

  /** Counts `value` in the first bucket whose upper bound is at least `value`, and in the sum and count. */
  observe(values: LabelValues<L>, value: number): void {
    const series = this.find(values);
    const bounds = this.#bounds;
    let bucket = 0;
    while (bucket < bounds.length && value > bounds[bucket]) bucket++;
    series.counts[bucket]++;
    series.sum += value;
    series.count++;
  }

  /** The histogram's lines: cumulative `_bucket` lines (`le` first), then `_sum` and `_count`, per series. */
  render(): string {
    const lines = [this.header("histogram")];
    for (const series of this.series) {
      const rest = series.labels === "" ? "" : `,${series.labels}`;
      let cumulative = 0;
      this.#bounds.forEach((bound, i) => {
        cumulative += series.counts[i];
        lines.push(`${this.name}_bucket{le="${bound}"${rest}} ${cumulative}`);
      });
      lines.push(
        `${this.name}_bucket{le="+Inf"${rest}} ${series.count}`,
        `${this.name}_sum${braced(series.labels)} ${formatValue(series.sum)}`,
        `${this.name}_count${braced(series.labels)} ${series.count}`,
      );
    }
    return lines.join("\n");
  }
}

/** An unlabelled counter or gauge whose value is read when the metrics are rendered. */
class Read implements Rendered {
  constructor(readonly name: string, readonly help: string, readonly type: "counter" | "gauge", readonly read: () => number) {}

  render(): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n${this.name} ${formatValue(this.read())}`;
  }
}

/**
 * A set of metrics, rendered together. Each instance is independent (no global registry).
 *
 * @example
 * ```ts
 * import { Registry } from "./metrics_registry.ts";
 *
 * const registry = new Registry();
 * let open = 0;
 * registry.read("gauge", "app_connections", "Connections open now.", () => open);
 * open = 3;
 * console.log(registry.render()); // … app_connections 3
 * ```
 */
export class Registry {
  /** The `Content-Type` of {@linkcode Registry.render}'s text. */
  readonly contentType: string = PROMETHEUS_CONTENT_TYPE;
  readonly #metrics: Rendered[] = [];

  /** A counter with `labelNames`; without labels, its one series starts at zero. */
  counter<const L extends readonly string[]>(name: string, help: string, labelNames: L): Counter<L> {
    return this.#add(new Counter(name, help, labelNames));
  }

  /** A gauge with `labelNames`. */
  gauge<const L extends readonly string[]>(name: string, help: string, labelNames: L): Gauge<L> {
    return this.#add(new Gauge(name, help, labelNames));
  }

  /** A histogram with `labelNames` and the bucket upper `bounds` (ascending; `+Inf` is added). */
  histogram<const L extends readonly string[]>(name: string, help: string, labelNames: L, bounds: readonly number[]): Histogram<L> {
    return this.#add(new Histogram(name, help, labelNames, bounds));
  }

  /** An unlabelled counter or gauge kept elsewhere: `read` gives its value at each render. */
  read(type: "counter" | "gauge", name: string, help: string, read: () => number): void {
    this.#add(new Read(name, help, type, read));
  }

  /** Every metric in the order it was made, in the Prometheus text format. */
  render(): string {
    return `${this.#metrics.map((metric) => metric.render()).join("\n\n")}\n`;
  }

  #add<M extends Rendered>(metric: M): M {
    if (this.#metrics.some((m) => m.name === metric.name)) throw new Error(`a metric named ${metric.name} is already registered`);
    this.#metrics.push(metric);
    return metric;
  }
}

function braced(labels: string): string {
  return labels === "" ? "" : `{${labels}}`;
}

function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

function escapeLabelValue(text: string): string {
  return escapeHelp(text).replaceAll('"', '\\"');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "+Inf" : "-Inf";
  return String(value);
}
