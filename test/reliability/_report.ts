/**
 * reports/reliability.md: one row per scenario of test/reliability_test.ts. Each scenario writes
 * its figures to `reliability/<row>.json` in the reports directory when it ends, and the page is
 * written again from every row's file, so a row run alone (the soak, say) takes its place among
 * the others.
 *
 * @module
 */

import { REPORTS } from "../_isolation_report.ts";
import { FULL } from "./_measure.ts";

/** How a row came out. */
export type Verdict = "pass" | "fail" | "not run";

/** One scenario's figures. */
export interface RowResult {
  /** The row's key in {@linkcode ROWS}. */
  row: RowName;
  verdict: Verdict;
  /** The figures, one line each (Markdown). */
  figures: string[];
  /** Why a row did not run, or what failed. */
  note?: string;
  /** Whether this was the full-size run. */
  full: boolean;
  /** The machine's load average (1 min) when the row was written: other work shares the cores. */
  load?: number;
  /** When it ran (ISO). */
  at: string;
}

/** The rows of the page, in order: what each scenario does and must show. */
export const ROWS = {
  idle: {
    test: "5,000 idle + 500 slowloris connections while a client signs",
    mustShow:
      "server alive, the signing client's p99 bounded; connections past the cap closed at once, the others by the header or body timeout; descriptors and the V8 heap back to baseline after; a second round does not grow RSS",
  },
  overload: {
    test: "overload at 4x saturation, HTTP and Keyless (gokeyless-style client: timeout, close, retry)",
    mustShow: "accepted requests keep completing at >= 80% of saturation throughput; the rest refused fast; recovery at once",
  },
  pipelining: {
    test: "one connection pipelining at full speed beside a second client (Keyless, TLS and TCP; HTTP with two tokens)",
    mustShow: "the second client's p99 stays within 3x its unloaded p99; RSS bounded",
  },
  kill: {
    test: "kill -9 of the key server (process mode) under load",
    mustShow: "only requests in flight fail; signing back within 1 s; no key lost",
  },
  memory: {
    test: "one-byte-chunked bodies, clients that never read, 3,000 pipelined Keyless requests",
    mustShow: "RSS bounded by the configured limits; well-behaved clients never cut; on HTTP their p99 within 3x unloaded",
  },
  freeze: {
    test: "data directory frozen 15 s (fsfreeze on a loop device)",
    mustShow: "cached keys keep signing; the rest 503 after the deadline",
  },
  trap: {
    test: "guest trap under load",
    mustShow: "only the trapping request fails",
  },
  store: {
    test: "PostgreSQL stopped and started under load; data directory full or read-only during generation",
    mustShow: "503s, never 404 or a wrong answer; no half-written key; every key signs after recovery",
  },
  upgrade: {
    test: "upgrade and SIGTERM under load",
    mustShow: "0 failed requests across an upgrade; in-flight requests complete on SIGTERM",
  },
  rotation: {
    test: "rotation beside live nodes generating keys",
    mustShow: "every key signs afterwards",
  },
  fuzz: {
    test: "fuzzing, per interface (HTTP, Keyless frames, guest ABI)",
    mustShow: "10^6 cases, 0 crashes, 0 hangs, every answer a typed error",
  },
  soak: {
    test: "soak: 30 minutes of mixed operations",
    mustShow: "0 errors, RSS flat (state the slope)",
  },
} as const;

export type RowName = keyof typeof ROWS;

const DIR = new URL("reliability/", REPORTS);

/**
 * Writes one row's figures and the page again.
 *
 * @example
 * ```ts
 * await recordRow({ row: "trap", verdict: "pass", figures: ["1 of 1,000 failed"] });
 * ```
 */
export async function recordRow(result: Omit<RowResult, "full" | "at">): Promise<void> {
  await Deno.mkdir(DIR, { recursive: true });
  const load = Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  const full: RowResult = { ...result, full: FULL, at: new Date().toISOString(), load };
  await Deno.writeTextFile(new URL(`${result.row}.json`, DIR), JSON.stringify(full, null, 2) + "\n");
  const rows = Object.keys(ROWS).map((name) => readRow(name as RowName));
  await Deno.writeTextFile(new URL("../reliability.md", DIR), renderReliability(rows, cpuModel()));
}

function readRow(name: RowName): RowResult | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(new URL(`${name}.json`, DIR)));
  } catch {
    return undefined;
  }
}

function cpuModel(): string {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    const model = /^model name\s*:\s*(.+)$/m.exec(info)?.[1] ?? "unknown CPU";
    return `${model}, ${navigator.hardwareConcurrency} cores, ${Deno.build.os} ${Deno.build.arch}, Deno ${Deno.version.deno}`;
  } catch {
    return `${navigator.hardwareConcurrency} cores`;
  }
}

/**
 * The page: the summary table, then each row's figures.
 *
 * @example
 * ```ts
 * console.log(renderReliability([undefined], "AMD EPYC"));
 * ```
 */
export function renderReliability(rows: (RowResult | undefined)[], machine: string): string {
  const names = Object.keys(ROWS) as RowName[];
  const lines = [
    "# keycell reliability report",
    "",
    "Written by `deno task reliability` (test/reliability_test.ts with `KEYCELL_RELIABILITY_FULL=1`): every " +
    "scenario runs on loopback with bounded loops, against `keycell serve` or `keycell keyserver` started as " +
    "users start them. `./keycell test` runs the same scenarios at a few seconds each. Latencies and throughput " +
    "are measured here and reported, never asserted; what is asserted is counts, statuses and ratios " +
    "(test/reliability_test.ts says which).",
    "",
    `Machine: ${machine}.`,
    "",
    "| test | must show | result | figures |",
    "|---|---|---|---|",
  ];
  names.forEach((name, i) => {
    const row = rows[i];
    const result = row === undefined
      ? "not measured yet"
      : `${row.verdict}${row.full ? "" : " (short run)"}<br>${row.at.slice(0, 16).replace("T", " ")} UTC${row.load === undefined ? "" : `, load ${row.load}`}`;
    const figures = row === undefined ? "" : [...row.figures, ...(row.note ? [`*${row.note}*`] : [])].join("<br>");
    lines.push(`| ${ROWS[name].test} | ${ROWS[name].mustShow} | ${result} | ${figures.replaceAll("|", "\\|")} |`);
  });
  lines.push("", "Each row's figures are also in `reports/reliability/<row>.json`, with the time it ran and the machine's load average then (other work may share the cores).");
  return lines.join("\n") + "\n";
}
