/**
 * The isolation suite's report: reports/isolation.json and reports/isolation.md.
 *
 * @module
 */

import type { RegionKind } from "./_procmem.ts";

/** One scan of one process at one point of a run. */
export interface ScanRecord {
  mode: string;
  phase: string;
  durationMs: number;
  bytesRead: number;
  guestRegions: number;
  /** Hits per key, per region kind. */
  hits: Record<string, Partial<Record<RegionKind, number>>>;
  heapSnapshot?: { bytes: number; hits: number };
}

/** A whole run. */
export interface IsolationReport {
  /** Whether every readable mapping was read, not only present pages. */
  full: boolean;
  scans: ScanRecord[];
}

const KINDS: RegionKind[] = ["guest", "heap", "stack", "anonymous", "file"];
const REPORTS = new URL("../reports/", import.meta.url);

/**
 * Writes both report files.
 *
 * @example
 * ```ts
 * await writeIsolationReport({ full: false, scans });
 * ```
 */
export async function writeIsolationReport(report: IsolationReport): Promise<void> {
  await Deno.mkdir(REPORTS, { recursive: true });
  await Deno.writeTextFile(new URL("isolation.json", REPORTS), JSON.stringify(report, null, 2) + "\n");
  await Deno.writeTextFile(new URL("isolation.md", REPORTS), renderIsolationReport(report));
}

/**
 * Renders the report as a Markdown table: one row per scan and key.
 *
 * @example
 * ```ts
 * console.log(renderIsolationReport(report));
 * ```
 */
export function renderIsolationReport(report: IsolationReport): string {
  const lines = [
    "# keycell isolation report",
    "",
    `Produced by \`deno task isolation\` (${report.full ? "every readable mapping" : "present pages only"}). ` +
    "Each row counts the places a key's secret bytes were found, by region kind: `guest` is a guest linear " +
    "memory; `heap`, `stack`, `anonymous` (V8 heaps, allocator arenas, thread stacks) and `file` are everywhere else. " +
    "`control` is the positive control, a program that keeps a key in JS memory on purpose.",
    "",
    `| mode | phase | key | ${KINDS.join(" | ")} | heap snapshot | scan ms | MB read |`,
    `|---|---|---|${KINDS.map(() => "---:").join("|")}|---:|---:|---:|`,
  ];
  for (const scan of report.scans) {
    const keys = Object.keys(scan.hits).sort();
    const snapshot = scan.heapSnapshot ? String(scan.heapSnapshot.hits) : "not taken";
    const mb = (scan.bytesRead / 1e6).toFixed(1);
    if (keys.length === 0) {
      lines.push(`| ${scan.mode} | ${scan.phase} | (none found) | ${KINDS.map(() => "0").join(" | ")} | ${snapshot} | ${scan.durationMs} | ${mb} |`);
    }
    for (const key of keys) {
      const counts = KINDS.map((k) => String(scan.hits[key][k] ?? 0)).join(" | ");
      lines.push(`| ${scan.mode} | ${scan.phase} | ${key} | ${counts} | ${snapshot} | ${scan.durationMs} | ${mb} |`);
    }
  }
  return lines.join("\n") + "\n";
}
