/**
 * The isolation suites' reports: `<suite>.json` and `<suite>.md` for each (isolation,
 * isolation-sealed, isolation-edge), and isolation.md, which also carries the other suites'
 * summary rows, so one page shows every runtime keycell runs on.
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

const KINDS: RegionKind[] = ["guest", "v8-heap", "native-heap", "stack", "file"];
/**
 * Where reports go: the committed reports/ only through `deno task isolation` or `deno task
 * reliability` (which set KEYCELL_REPORTS_DIR), so that the test suite leaves a clone as it found it.
 */
export const REPORTS = Deno.env.get("KEYCELL_REPORTS_DIR")
  ? new URL(`${Deno.env.get("KEYCELL_REPORTS_DIR")!.replace(/\/?$/, "/")}`, `file://${Deno.cwd()}/`)
  : new URL("../.cache/reports/", import.meta.url);

/**
 * Writes `<reports dir>/<name>.json` and `.md` (`<name>-full.*` for the variant that reads every
 * readable mapping).
 *
 * @example
 * ```ts
 * await writeIsolationReport({ full: false, scans }, "isolation");
 * ```
 */
export async function writeIsolationReport(report: IsolationReport, suite: string): Promise<void> {
  await Deno.mkdir(REPORTS, { recursive: true });
  const suffix = report.full ? "-full" : "";
  const name = `${suite}${suffix}`;
  await Deno.writeTextFile(new URL(`${name}.json`, REPORTS), JSON.stringify(report, null, 2) + "\n");
  if (suite !== MAIN_SUITE) await Deno.writeTextFile(new URL(`${name}.md`, REPORTS), renderIsolationReport(report));
  // The main page is written again whichever suite ran, from what each suite last wrote.
  const main = readReport(`${MAIN_SUITE}${suffix}`);
  if (main === undefined) return;
  const others = OTHER_SUITES.flatMap(({ suite, title }) => {
    const other = readReport(`${suite}${suffix}`);
    return other === undefined ? [] : [{ name: `${suite}${suffix}`, title, report: other }];
  });
  await Deno.writeTextFile(new URL(`${MAIN_SUITE}${suffix}.md`, REPORTS), renderIsolationReport(main, others));
}

/** The suite whose page (isolation.md) also shows the others'. */
const MAIN_SUITE = "isolation";
/** The other suites, in the order the main page shows them. */
const OTHER_SUITES = [
  { suite: "isolation-sealed", title: "Sealed keys: generated, imported and the master key (`test/isolation_sealed_test.ts`)" },
  { suite: "isolation-edge", title: "workerd: one process, and the api and signer processes apart (`test/isolation_edge_test.ts`)" },
];

function readReport(name: string): IsolationReport | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(new URL(`${name}.json`, REPORTS)));
  } catch {
    return undefined;
  }
}

/**
 * One row per scan: secret-byte windows found in guest memory and everywhere else, and in the
 * Hono isolate's heap snapshot.
 *
 * @example
 * ```ts
 * console.log(renderIsolationSummary(report).join("\n"));
 * ```
 */
export function renderIsolationSummary(report: IsolationReport): string[] {
  const lines = [
    "| mode | phase | keys found | in guest memory | anywhere else | in heap snapshot | scan ms | MB read |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ];
  for (const scan of report.scans) {
    const perKey = Object.values(scan.hits);
    const guest = perKey.reduce((n, k) => n + (k.guest ?? 0), 0);
    const all = perKey.reduce((n, k) => n + Object.values(k).reduce((a, b) => a + (b ?? 0), 0), 0);
    const snapshot = scan.heapSnapshot ? String(scan.heapSnapshot.hits) : "not taken";
    lines.push(
      `| ${scan.mode} | ${scan.phase} | ${perKey.length} | ${guest} | ${all - guest} | ${snapshot} | ${scan.durationMs} | ${(scan.bytesRead / 1e6).toFixed(1)} |`,
    );
  }
  return lines;
}

/**
 * Renders the report as Markdown: the summary, then one row per scan and key.
 *
 * @example
 * ```ts
 * console.log(renderIsolationReport(report));
 * ```
 */
export function renderIsolationReport(report: IsolationReport, others: { name: string; title: string; report: IsolationReport }[] = []): string {
  const lines = [
    "# keycell isolation report",
    "",
    `Produced by \`deno task isolation\` (${report.full ? "every readable mapping" : "present pages only"}). ` +
    "Each row counts the places a key's secret bytes were found, by region kind: `guest` is a guest linear " +
    "memory; `v8-heap` (V8's randomly placed heap pages), `native-heap` (`[heap]`, allocator arenas and other " +
    "anonymous mappings), `stack` (any thread's) and `file` are everywhere else. " +
    "`control` is the positive control, a program that keeps a key in JS memory on purpose.",
    "",
    ...renderIsolationSummary(report),
    "",
    "## Per key and region kind",
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
  for (const other of others) {
    lines.push("", `## ${other.title}`, "", `Per key and region kind: \`${other.name}.md\`.`, "", ...renderIsolationSummary(other.report));
  }
  return lines.join("\n") + "\n";
}
