/**
 * What the reliability scenarios measure: latency percentiles, a process tree's resident memory
 * and open descriptors from /proc, closed-loop clients that count their answers by kind, and the
 * size of a run (short in the test suite, full for the report).
 *
 * @module
 */

import { childrenOfEveryThread } from "../_command.ts";

/** `KEYCELL_RELIABILITY_FULL=1`: the report's sizes; otherwise the test suite's short run. */
export const FULL = Deno.env.get("KEYCELL_RELIABILITY_FULL") === "1";

/** The short run's figure, or the full run's. */
export function size<T>(short: T, full: T): T {
  return FULL ? full : short;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The q-quantile (0..1) of `values`, nearest rank; NaN for none. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** "p50 1.2 ms, p99 4.5 ms (n = 1000)". */
export function latencies(values: readonly number[]): string {
  return `p50 ${ms(quantile(values, 0.5))}, p99 ${ms(quantile(values, 0.99))} (n = ${values.length})`;
}

export const ms = (value: number) => Number.isNaN(value) ? "n/a" : `${value < 10 ? value.toFixed(2) : value.toFixed(1)} ms`;
export const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

/** A process and every process it started, from /proc (children of every thread). */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      out.push(...childrenOfEveryThread(out[i]));
    } catch {
      // the process ended while it was read
    }
  }
  return out;
}

/** `measure` summed over a process tree; a process that ends while it is read counts 0. */
function sumOverTree(pid: number, measure: (pid: number) => number): number {
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      total += measure(p);
    } catch {
      // ended
    }
  }
  return total;
}

/** Resident memory (VmRSS, KiB) of a process tree. */
export function rssKib(pid: number): number {
  return sumOverTree(pid, (p) => Number(/VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${p}/status`))?.[1] ?? 0));
}

/**
 * CPU time (user and system, seconds) a process tree has used so far, every thread (a Worker's
 * included) counted: clock ticks of 1/100 s, as Linux reports them.
 */
export function cpuSeconds(pid: number): number {
  return sumOverTree(pid, (p) => {
    // The fields after the command name, which is in parentheses and may hold spaces.
    const fields = Deno.readTextFileSync(`/proc/${p}/stat`).split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  });
}

/** Open descriptors of a process tree. */
export function descriptors(pid: number): number {
  return sumOverTree(pid, (p) => [...Deno.readDirSync(`/proc/${p}/fd`)].length);
}

/** Answers counted by kind ("200", "503", "timeout", ...), with their latencies. */
export class Tally {
  readonly counts: Record<string, number> = {};
  /** Latencies of the answers `good` accepts, in ms. */
  readonly good: number[] = [];
  /** Latencies of every other outcome, in ms. */
  readonly other: number[] = [];
  /** Latencies by kind, in ms. */
  readonly byKind: Record<string, number[]> = {};

  constructor(readonly isGood: (kind: string) => boolean = (kind) => kind === "200" || kind === "201" || kind === "ok") {}

  add(kind: string, elapsedMs: number): void {
    this.counts[kind] = (this.counts[kind] ?? 0) + 1;
    (this.isGood(kind) ? this.good : this.other).push(elapsedMs);
    (this.byKind[kind] ??= []).push(elapsedMs);
  }

  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }

  get failures(): number {
    return this.total - this.good.length;
  }

  /** Each kind with its count and its slowest answer: "503: 2 (max 5012 ms)". */
  describeTimes(): string {
    return Object.entries(this.byKind).map(([kind, times]) => `${kind}: ${times.length} (max ${ms(Math.max(...times))})`).join(", ");
  }

  /** `{"200": 990, "503": 10}` as "200: 990, 503: 10". */
  describe(): string {
    const entries = Object.entries(this.counts).sort((a, b) => b[1] - a[1]);
    return entries.length === 0 ? "none" : entries.map(([k, n]) => `${k}: ${n}`).join(", ");
  }
}

/** The kind of a thrown error, for a tally: its `reason` (Keyless client) or its name. */
export function errorKind(err: unknown): string {
  const reason = (err as { reason?: string }).reason;
  if (typeof reason === "string") return reason;
  const message = (err as Error).message ?? String(err);
  if (/reset|broken pipe|connection closed|error sending request/i.test(message)) return "connection lost";
  if (/refused/i.test(message)) return "connection refused";
  return `${(err as Error).name ?? "error"}: ${message.slice(0, 80)}`;
}

/**
 * Runs `clients` loops of `once` until `stop()` says so; each call answers its outcome's kind,
 * which the tally counts with its latency.
 */
export async function closedLoop(
  clients: number,
  once: (client: number) => Promise<string>,
  stop: () => boolean,
  tally = new Tally(),
): Promise<Tally> {
  await Promise.all(Array.from({ length: clients }, async (_, client) => {
    while (!stop()) {
      const started = performance.now();
      let kind: string;
      try {
        kind = await once(client);
      } catch (err) {
        kind = errorKind(err);
      }
      tally.add(kind, performance.now() - started);
    }
  }));
  return tally;
}

/** A stop condition: true after `ms`. */
export function after(ms: number): () => boolean {
  const end = performance.now() + ms;
  return () => performance.now() >= end;
}

/** Least-squares slope of y over x. */
export function slope(points: readonly { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return NaN;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  const num = points.reduce((a, p) => a + (p.x - mx) * (p.y - my), 0);
  const den = points.reduce((a, p) => a + (p.x - mx) ** 2, 0);
  return den === 0 ? NaN : num / den;
}

/**
 * Offers `ratePerSecond` calls of `fire` until `stop()`, whether earlier ones have answered or
 * not (an open loop), at most `maxOutstanding` at once: a call that would pass that is counted as
 * not offered. Answers the number offered and not offered.
 */
export async function openLoop(
  ratePerSecond: number,
  stop: () => boolean,
  fire: () => Promise<string>,
  tally: Tally,
  maxOutstanding = 8_192,
): Promise<{ offered: number; skipped: number; seconds: number }> {
  const started = performance.now();
  let offered = 0;
  let skipped = 0;
  let outstanding = 0;
  const all = new Set<Promise<void>>();
  while (!stop()) {
    const due = Math.floor(((performance.now() - started) / 1000) * ratePerSecond) - offered - skipped;
    for (let i = 0; i < due; i++) {
      if (outstanding >= maxOutstanding) {
        skipped++;
        continue;
      }
      offered++;
      outstanding++;
      const at = performance.now();
      const call: Promise<void> = fire().catch(errorKind).then((kind) => {
        tally.add(kind, performance.now() - at);
        outstanding--;
        all.delete(call);
      });
      all.add(call);
    }
    await sleep(5);
  }
  const seconds = (performance.now() - started) / 1000;
  await Promise.all(all);
  return { offered, skipped, seconds };
}
