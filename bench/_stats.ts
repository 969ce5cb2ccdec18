/**
 * Small statistics for the benchmarks: medians across rounds, latency percentiles within one.
 *
 * @module
 */

/**
 * The median of some numbers (the mean of the middle two for an even count); NaN for none.
 *
 * @example
 * ```ts
 * median([3, 1, 2]); // 2
 * ```
 */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * The nearest-rank percentile `p` (0..100) of already sorted values; NaN for none.
 *
 * @example
 * ```ts
 * percentile([1, 2, 3, 4], 50); // 2
 * ```
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  // The epsilon keeps 99.9% of 1000 at rank 999 despite binary floating point.
  const rank = Math.ceil((p * sorted.length) / 100 - 1e-9);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Latency percentiles in milliseconds. */
export interface Latency {
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

/**
 * p50, p99, p99.9 and max of durations in milliseconds.
 *
 * @example
 * ```ts
 * latencyOf([0.2, 0.3, 0.25]).p50; // 0.25
 * ```
 */
export function latencyOf(durationsMs: ArrayLike<number>): Latency {
  const sorted = Float64Array.from(durationsMs).sort();
  return {
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: sorted.length ? sorted[sorted.length - 1] : NaN,
  };
}

/**
 * A number for a results table: three significant digits, thousands kept whole.
 *
 * @example
 * ```ts
 * fmt(5635.4); // "5635"
 * fmt(0.01234); // "0.0123"
 * ```
 */
export function fmt(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return "—";
  if (Math.abs(value) >= 100) return Math.round(value).toString();
  return Number(value.toPrecision(3)).toString();
}
