/**
 * Renders a benchmark run as bench/RESULTS.md and bench/results.json.
 *
 * @module
 */

import type { CoreResult } from "./core.ts";
import type { LayerResult } from "./boundaries.ts";
import type { HttpResult } from "./http.ts";
import { fmt, median } from "./_stats.ts";
import { type Machine, machineRows } from "./_machine.ts";

/** Everything one run measured, and where. */
export interface Run {
  date: string;
  command: string;
  quick: boolean;
  machine: Machine;
  versions: Record<string, string>;
  commit: string;
  settings: Record<string, unknown>;
  core: CoreResult[];
  boundaries: LayerResult[];
  http: HttpResult[];
  /** Direct guest calls on every core at once, measured between the HTTP rounds (ops/s). */
  httpReference: number[];
  targets: { name: string; value: string; goal: string; met: boolean | undefined }[];
}

/** Text that follows this marker in RESULTS.md is kept when the file is rewritten. */
export const KEPT_MARKER = "<!-- Everything below this line is kept when `deno task bench` rewrites the file. -->";

const ms = (v: number | undefined) => fmt(v);

/**
 * The Markdown report.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile("bench/RESULTS.md", renderMarkdown(run, kept));
 * ```
 */
export function renderMarkdown(run: Run, kept: string): string {
  const out: string[] = [];
  const line = (s = "") => out.push(s);
  line("# keycell benchmark results");
  line();
  line(`Written by \`${run.command}\` on ${run.date} (commit ${run.commit}). ${run.quick ? "**Quick smoke run: short, one round; not for quoting.**" : ""}`);
  line();
  machineRows(run.machine).forEach((row) => line(row));
  for (const [name, version] of Object.entries(run.versions)) line(`| ${name} | ${version} |`);
  line();
  line(`Settings: ${Object.entries(run.settings).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(", ")}.`);
  line();
  line("## Targets");
  line();
  line("| target | measured | goal | met |");
  line("|---|---|---|---|");
  for (const t of run.targets) line(`| ${t.name} | ${t.value} | ${t.goal} | ${t.met === undefined ? "not measured" : t.met ? "yes" : "**no**"} |`);
  line();
  line("## Crypto core: signatures per CPU-second, one core");
  line();
  line("Each implementation signs a digest-sized message in a loop for the set time; all four run in");
  line("every round, in rotating order; figures are medians over rounds. guest = wasm/signer.wasm called");
  line("directly (`Compartment.handle`) in Deno; openssl = `openssl speed -mr -seconds N` (its default");
  line("counts CPU time; no PSS mode); node = node:crypto `sign()` with a KeyObject; webcrypto = Deno's");
  line("`crypto.subtle.sign`, one call at a time. Per CPU-second (`process.cpuUsage()`, openssl's own");
  line("count) is what a signature costs, whatever the neighbours do; per wall-clock second follows.");
  line();
  const table = (pick: (r: CoreResult) => Partial<Record<string, number>>) => {
    line("| operation | guest | openssl | node | webcrypto | guest / openssl | guest / node | guest / webcrypto |");
    line("|---|---|---|---|---|---|---|---|");
    for (const r of run.core) {
      const o = pick(r);
      const ratio = (other?: number) => o.guest && other ? `${fmt((o.guest / other) * 100)}%` : "—";
      line(`| ${r.row} | ${fmt(o.guest)} | ${fmt(o.openssl)} | ${fmt(o.node)} | ${fmt(o.webcrypto)} | ${ratio(o.openssl)} | ${ratio(o.node)} | ${ratio(o.webcrypto)} |`);
    }
  };
  table((r) => r.opsPerCpuSecond);
  line();
  line("Per wall-clock second (openssl with `-elapsed`), same rounds:");
  line();
  table((r) => r.opsPerSecond);
  const missing = run.core.flatMap((r) => Object.entries(r.missing).map(([impl, why]) => `${r.row} / ${impl}: ${why}`));
  if (missing.length) line(`\nNot measured: ${[...new Set(missing.map((m) => m.split(": ").slice(1).join(": ")))].join("; ")}.`);
  line();
  line("## Boundaries: ECDSA P-256 (SHA-256 digest) through each layer");
  line();
  line("Rotating rounds in one process; throughput is the median over rounds, latency percentiles are");
  line("over every call of every round (ms). \"in flight\" is how many requests the caller keeps open;");
  line("CPU is this process's CPU time (all threads) per signature, median over rounds.");
  line();
  line("| layer | in flight | signatures/s | CPU µs / signature | p50 ms | p99 ms | p99.9 ms |");
  line("|---|---|---|---|---|---|---|");
  for (const b of run.boundaries) {
    if (b.missing) {
      line(`| ${b.layer} | — | ${b.missing} | | | | |`);
      continue;
    }
    line(`| ${b.layer} | ${b.concurrency} | ${fmt(b.opsPerSecond)} | ${fmt(b.cpuPerSignatureUs)} | ${ms(b.latency?.p50)} | ${ms(b.latency?.p99)} | ${ms(b.latency?.p999)} |`);
  }
  const one = run.boundaries.find((b) => b.layer.startsWith("guest called directly ("))?.opsPerSecond;
  const all = run.boundaries.find((b) => b.layer.startsWith("guest called directly,"));
  if (one && all?.opsPerSecond) {
    const scale = all.opsPerSecond / one;
    line();
    line(`${all.concurrency} direct-call workers together signed ${fmt(scale)}x what one did` +
      (scale < all.concurrency * 0.75 ? ": the cores were not all free during this run (see the load average), so multi-core rows understate what an idle machine gives." : "."));
  }
  line();
  line("## HTTP: `POST /v1/keys/{id}/sign`, ECDSA P-256, on loopback");
  line();
  line("Saturation: wrk, one thread, a fixed number of connections (closed loop), `bench/sign.lua`;");
  line("every server is up at once and they alternate by round, with the guest called directly on every");
  line("core measured between them (the reference). Fixed rates: vegeta (open loop, constant rate, so");
  line("a slow response does not hold back the next request), at fractions of each server's own saturation.");
  line("The load generator shares the machine's cores with the server.");
  line();
  line(`Reference, guest called directly on every core at once, by round: ${run.httpReference.map((r) => fmt(r)).join(", ")} signatures/s.`);
  for (const h of run.http) {
    if (h.saturation) line(`Saturation of ${h.config}, by round: ${h.saturation.rounds.map((r) => fmt(r)).join(", ")} requests/s.`);
  }
  line();
  line("Server CPU is the server process's CPU time (all threads, /proc) per answered request at saturation.");
  line();
  line("\"of direct\" is the saturation rate over the reference's median. Fixed rates run once per round;");
  line("the row shows the round whose p99 is the median. Load generator CPU is wrk's or vegeta's own");
  line("user + system time per request (GNU time): it comes out of the same two cores.");
  line();
  const reference = median(run.httpReference);
  line("| server | load | requests/s | of direct | server CPU µs / request | load generator CPU µs / request | p50 ms | p99 ms | p99 ms by round | p99.9 ms | failed |");
  line("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const h of run.http) {
    if (h.missing || !h.saturation) {
      line(`| ${h.config} | — | ${h.missing ?? "not measured"} | | | | | | | | |`);
      continue;
    }
    const s = h.saturation;
    const share = reference > 0 ? `${fmt((100 * s.requestsPerSecond) / reference)}%` : "—";
    line(`| ${h.config} | saturation (wrk) | ${fmt(s.requestsPerSecond)} | ${share} | ${fmt(s.serverCpuPerRequestUs)} | ${fmt(s.loadGeneratorCpuPerRequestUs)} | ${ms(s.latency.p50)} | ${ms(s.latency.p99)} | | ${ms(s.latency.p999)} | ${s.non2xx + s.socketErrors} |`);
    for (const f of h.fixedRates) {
      line(`| ${h.config} | ${fmt(f.fraction * 100)}% = ${f.targetPerSecond}/s (vegeta) | ${fmt(f.achievedPerSecond)} | | | ${fmt(f.loadGeneratorCpuPerRequestUs)} | ${ms(f.latency.p50)} | ${ms(f.latency.p99)} | ${(f.p99Rounds ?? []).map((p) => ms(p)).join(", ")} | ${ms(f.latency.p999)} | ${f.failures} of ${f.requests} |`);
    }
  }
  line();
  line(KEPT_MARKER);
  if (kept.trim()) line(kept.replace(/^\n+/, ""));
  return out.join("\n").replace(/\n{3,}/g, "\n\n") + "\n";
}
