/**
 * The HTTP benchmark: ECDSA P-256 signing through `keycell serve` on loopback, driven by real load
 * generators — wrk (closed loop) to find saturation, vegeta (open loop) at fixed fractions of it.
 * Every server configuration is started at once and measured in alternating rounds, next to the
 * guest called directly on the same cores, so the ratio between them shares the machine's load.
 *
 * @module
 */

import { sha256Hex } from "../src/host/auth.ts";
import { type RunningServer, startDeno, startServer } from "../test/_command.ts";
import { type Latency, latencyOf, median } from "./_stats.ts";

/** A server configuration to measure. */
export interface HttpConfig {
  name: string;
  env: Record<string, string>;
  /** Run this module instead of `keycell serve` (it must print the same ready line). */
  module?: string;
}

/** Saturation and fixed-rate figures for one configuration. */
export interface HttpResult {
  config: string;
  saturation?: {
    requestsPerSecond: number;
    rounds: number[];
    latency: Latency;
    non2xx: number;
    socketErrors: number;
    /** The server process's CPU time per answered request, all threads (µs, median over rounds). */
    serverCpuPerRequestUs: number;
    /** wrk's own CPU time per request (µs, median over rounds); NaN without /usr/bin/time. */
    loadGeneratorCpuPerRequestUs: number;
  };
  fixedRates: FixedRateResult[];
  missing?: string;
}

/** One open-loop run at a fixed request rate. */
export interface FixedRateResult {
  /** Fraction of this configuration's saturation throughput. */
  fraction: number;
  targetPerSecond: number;
  achievedPerSecond: number;
  /** Of the round whose p99 is the median. */
  latency: Latency;
  /** p99 of each round (ms). */
  p99Rounds: number[];
  requests: number;
  failures: number;
  /** vegeta's own CPU time per request (µs, median over rounds); NaN without /usr/bin/time. */
  loadGeneratorCpuPerRequestUs: number;
}

/** What the HTTP run needs. */
export interface HttpOptions {
  /** A key directory with a P-256 key, and that key's hex id. */
  keysDir: string;
  keyId: string;
  configs: HttpConfig[];
  rounds: number;
  seconds: number;
  /** wrk's connections (one wrk thread). */
  connections: number;
  fractions: number[];
  /** The same cores' direct-call rate, measured between HTTP rounds. */
  reference?: (seconds: number) => Promise<number>;
  wrk?: string;
  vegeta?: string;
  workDir: string;
  log?: (line: string) => void;
}

/** The request body every HTTP run signs. */
const BODY = JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(7).toBase64() });

/**
 * Runs the HTTP benchmark; the reference rate's rounds come back beside the results.
 *
 * @example
 * ```ts
 * const { results } = await runHttp({ keysDir, keyId, configs, rounds: 3, seconds: 5, connections: 32, fractions: [0.5], workDir });
 * ```
 */
export async function runHttp(options: HttpOptions): Promise<{ results: HttpResult[]; reference: number[] }> {
  const log = options.log ?? (() => {});
  const token = crypto.randomUUID();
  const dataDir = `${options.workDir}/http-data`;
  await Deno.mkdir(dataDir, { recursive: true });
  await Deno.writeTextFile(
    `${dataDir}/tokens.json`,
    JSON.stringify({ tokens: [{ name: "bench", sha256: sha256Hex(token), keys: "*" }] }),
  );
  const results: HttpResult[] = options.configs.map((c) => ({ config: c.name, fixedRates: [] }));
  const wrk = options.wrk && await runs(options.wrk, ["--version"]) ? options.wrk : undefined;
  const vegeta = options.vegeta && await runs(options.vegeta, ["-version"]) ? options.vegeta : undefined;
  if (!wrk) {
    for (const r of results) r.missing = "wrk is not installed (bench/install_tools.sh)";
    return { results, reference: [] };
  }

  const servers: RunningServer[] = [];
  const reference: number[] = [];
  try {
    for (const config of options.configs) {
      const env = { KEYCELL_KEYS_DIR: options.keysDir, KEYCELL_MAX_IN_FLIGHT: "100000", ...config.env };
      servers.push(
        config.module === undefined ? await startServer({ dataDir, env }) : await startModule(config.module, env),
      );
    }
    const path = `/v1/keys/${options.keyId}/sign`;
    const runWrk = (server: RunningServer, seconds: number) => wrkRun(wrk, server.url, path, token, options.connections, seconds);
    for (const server of servers) await runWrk(server, 1); // warm-up: JIT in the server and the guests

    const saturations = options.configs.map(() => [] as WrkFigures[]);
    for (let round = 0; round < options.rounds; round++) {
      if (options.reference) {
        reference.push(await options.reference(options.seconds));
        log(`http round ${round + 1}/${options.rounds}: direct reference ${reference.at(-1)!.toFixed(0)}/s`);
      }
      for (let k = 0; k < servers.length; k++) {
        const i = (k + round) % servers.length;
        const cpuBefore = processCpuSeconds(servers[i].pid);
        const figures = await runWrk(servers[i], options.seconds);
        figures.cpuPerRequestUs = ((processCpuSeconds(servers[i].pid) - cpuBefore) * 1e6) / figures.requests;
        saturations[i].push(figures);
        log(`http round ${round + 1}/${options.rounds}: ${options.configs[i].name} saturation ${figures.rate.toFixed(0)}/s p99 ${(figures.p99 / 1000).toFixed(2)} ms`);
      }
    }
    for (const [i, runsOf] of saturations.entries()) {
      const rates = runsOf.map((f) => f.rate);
      // The latency of the round whose throughput is the median represents the configuration.
      const mid = runsOf.toSorted((a, b) => a.rate - b.rate)[(runsOf.length - 1) >> 1];
      results[i].saturation = {
        requestsPerSecond: median(rates),
        rounds: rates,
        latency: { p50: mid.p50 / 1000, p99: mid.p99 / 1000, p999: mid.p999 / 1000, max: mid.max / 1000 },
        non2xx: runsOf.reduce((n, f) => n + f.non2xx, 0),
        socketErrors: runsOf.reduce((n, f) => n + f.socketErrors, 0),
        serverCpuPerRequestUs: median(runsOf.map((f) => f.cpuPerRequestUs)),
        loadGeneratorCpuPerRequestUs: median(runsOf.map((f) => f.loadGeneratorCpuPerRequestUs)),
      };
    }

    if (!vegeta) {
      log("vegeta is not installed: no fixed-rate runs");
    } else {
      // Rounds here too: a p99 from one short open-loop run on shared cores varies a lot.
      const fixedRuns = options.configs.map(() => options.fractions.map(() => [] as VegetaFigures[]));
      for (let round = 0; round < options.rounds; round++) {
        for (const [f, fraction] of options.fractions.entries()) {
          for (const [i, server] of servers.entries()) {
            const target = Math.max(1, Math.round(results[i].saturation!.requestsPerSecond * fraction));
            const fixed = await vegetaRun(vegeta, server.url, path, token, target, options.seconds, options.workDir);
            fixedRuns[i][f].push(fixed);
            log(`http round ${round + 1}/${options.rounds}: ${options.configs[i].name} at ${target}/s: p50 ${fixed.latency.p50.toFixed(2)} p99 ${fixed.latency.p99.toFixed(2)} ms, ${fixed.failures} failed`);
          }
        }
      }
      for (const [i, byFraction] of fixedRuns.entries()) {
        for (const [f, runsOf] of byFraction.entries()) {
          const mid = runsOf.toSorted((a, b) => a.latency.p99 - b.latency.p99)[(runsOf.length - 1) >> 1];
          results[i].fixedRates.push({
            fraction: options.fractions[f],
            targetPerSecond: mid.targetPerSecond,
            achievedPerSecond: median(runsOf.map((r) => r.achievedPerSecond)),
            latency: mid.latency,
            p99Rounds: runsOf.map((r) => r.latency.p99),
            requests: runsOf.reduce((n, r) => n + r.requests, 0),
            failures: runsOf.reduce((n, r) => n + r.failures, 0),
            loadGeneratorCpuPerRequestUs: median(runsOf.map((r) => r.loadGeneratorCpuPerRequestUs)),
          });
        }
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
  return { results, reference };
}

async function startModule(module: string, env: Record<string, string>): Promise<RunningServer> {
  const running = await startDeno({
    args: ["--unstable-worker-options", "--allow-read", "--allow-env", "--allow-net", module],
    ready: /keycell ready on (http:\/\/\S+)/,
    env: { KEYCELL_LISTEN: "127.0.0.1:0", ...env },
  });
  return { ...running, url: running.ready[1] };
}

/** What one wrk run measured (latencies in µs). */
export interface WrkFigures {
  rate: number;
  requests: number;
  cpuPerRequestUs: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  non2xx: number;
  socketErrors: number;
  loadGeneratorCpuPerRequestUs: number;
}

type VegetaFigures = Omit<FixedRateResult, "fraction" | "p99Rounds">;

/** GNU time, to learn a load generator's own CPU time; the figures are NaN without it. */
const TIME = "/usr/bin/time";
const HAS_TIME = (() => {
  try {
    return Deno.statSync(TIME).isFile;
  } catch {
    return false;
  }
})();

/** Runs `binary args` under GNU time when present; returns the output and the child's CPU seconds. */
async function timed(binary: string, args: string[], options: Deno.CommandOptions) {
  const out = await new Deno.Command(HAS_TIME ? TIME : binary, {
    ...options,
    args: HAS_TIME ? ["-f", "KEYCELL_TIME %U %S", binary, ...args] : args,
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  const times = /KEYCELL_TIME ([\d.]+) ([\d.]+)/.exec(stderr);
  return { out, stderr, cpuSeconds: times ? Number(times[1]) + Number(times[2]) : NaN };
}

/**
 * One closed-loop wrk run (one thread) of the P-256 signing request against `url` + `path`.
 *
 * @example
 * ```ts
 * const figures = await wrkRun("wrk", server.url, `/v1/keys/${id}/sign`, token, 32, 5);
 * ```
 */
export async function wrkRun(wrk: string, url: string, path: string, token: string, connections: number, seconds: number): Promise<WrkFigures> {
  const { out, stderr, cpuSeconds } = await timed(
    wrk,
    ["-t1", `-c${connections}`, `-d${Math.max(1, Math.round(seconds))}s`, "--timeout", "10s", "-s", new URL("./sign.lua", import.meta.url).pathname, url],
    { env: { KEYCELL_BENCH_PATH: path, KEYCELL_BENCH_TOKEN: token, KEYCELL_BENCH_BODY: BODY }, stdout: "piped" },
  );
  const text = new TextDecoder().decode(out.stdout);
  const line = text.split("\n").find((l) => l.startsWith("KEYCELL_WRK "));
  if (!out.success || line === undefined) throw new Error(`wrk failed:\n${text}${stderr}`);
  const f = JSON.parse(line.slice("KEYCELL_WRK ".length));
  const ok = f.requests - f.non2xx;
  return {
    rate: ok / (f.durationUs / 1e6),
    requests: ok,
    cpuPerRequestUs: NaN,
    p50: f.p50,
    p99: f.p99,
    p999: f.p999,
    max: f.max,
    non2xx: f.non2xx,
    socketErrors: f.socketErrors,
    loadGeneratorCpuPerRequestUs: (cpuSeconds * 1e6) / f.requests,
  };
}

async function vegetaRun(
  vegeta: string,
  url: string,
  path: string,
  token: string,
  rate: number,
  seconds: number,
  workDir: string,
): Promise<VegetaFigures> {
  const body = `${workDir}/vegeta-body.json`;
  const targets = `${workDir}/vegeta-targets.txt`;
  const results = `${workDir}/vegeta-results.bin`;
  await Deno.writeTextFile(body, BODY);
  await Deno.writeTextFile(targets, `POST ${url}${path}\nAuthorization: Bearer ${token}\nContent-Type: application/json\n@${body}\n`);
  const attack = await timed(
    vegeta,
    ["attack", `-targets=${targets}`, `-rate=${rate}/1s`, `-duration=${Math.max(1, Math.round(seconds))}s`, "-timeout=10s", "-max-workers=512", `-output=${results}`],
    { stdout: "null" },
  );
  if (!attack.out.success) throw new Error(`vegeta attack failed: ${attack.stderr}`);
  const encoded = await new Deno.Command(vegeta, { args: ["encode", "--to=csv", results], stdout: "piped", stderr: "piped" }).output();
  if (!encoded.success) throw new Error(`vegeta encode failed: ${new TextDecoder().decode(encoded.stderr)}`);
  // CSV: timestamp (ns), status code, latency (ns), ... — the first three fields are plain numbers.
  const durations: number[] = [];
  let failures = 0;
  let first = Infinity;
  let last = -Infinity;
  for (const line of new TextDecoder().decode(encoded.stdout).split("\n")) {
    if (!line) continue;
    const [timestamp, code, latency] = line.split(",", 3).map(Number);
    if (code !== 200) failures++;
    durations.push(latency / 1e6);
    first = Math.min(first, timestamp);
    last = Math.max(last, timestamp + latency);
  }
  const ok = durations.length - failures;
  return {
    targetPerSecond: rate,
    achievedPerSecond: ok / ((last - first) / 1e9),
    latency: latencyOf(durations),
    requests: durations.length,
    failures,
    loadGeneratorCpuPerRequestUs: (attack.cpuSeconds * 1e6) / durations.length,
  };
}

/**
 * User plus system CPU seconds of a process and all its threads, from /proc (clock ticks of 10 ms).
 *
 * @example
 * ```ts
 * const seconds = processCpuSeconds(Deno.pid);
 * ```
 */
export function processCpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function runs(binary: string, args: string[]): Promise<boolean> {
  try {
    await new Deno.Command(binary, { args, stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}
