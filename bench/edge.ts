/**
 * `deno task bench:edge [--quick]`: HTTP P-256 signing on workerd beside `keycell serve`, in the
 * same run and rotating rounds: `serve` (worker pool, one instance per core), `./keycell edge` with
 * both Workers in one workerd process, the two-process layout (api + signer), and two one-process
 * deployments on two ports driven at once (workerd runs a process's JS on one thread, so using
 * every core takes a process per core). wrk (closed loop, one thread, 32 connections; 16 per port
 * for the pair) measures requests/s and p50/p99; the server's CPU time per request comes from
 * /proc/PID/stat of the server processes (the workerd processes, not the launcher).
 *
 * Writes bench/edge/RESULTS.md and results.json (.cache/bench/edge/ for `--quick`, a smoke run).
 *
 * @module
 */

import { childrenOf, type RunningServer, startDeno, startServer } from "../test/_command.ts";
import { processCpuSeconds, type WrkFigures, wrkRun } from "./http.ts";
import { median } from "./_stats.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const EDGE = `${ROOT}/scripts/edge.ts`;
const quick = Deno.args.includes("--quick");
const outDir = quick ? `${ROOT}/.cache/bench/edge` : `${ROOT}/bench/edge`;
const settings = quick ? { rounds: 1, seconds: 2 } : { rounds: 3, seconds: 5 };
const CONNECTIONS = 32;
const cores = navigator.hardwareConcurrency;
const log = (line: string) => console.error(`bench edge: ${line}`);

/** One deployment: its URL, token, key, and the processes whose CPU it spends. */
interface Target {
  server: RunningServer;
  token: string;
  keyId: string;
  cpuPids: number[];
}

/** A configuration: one or more deployments driven at once. */
interface Config {
  name: string;
  start(dir: string): Promise<Target[]>;
}

interface Row {
  config: string;
  requestsPerSecond: number;
  rounds: number[];
  serverCpuPerRequestUs: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: number;
}

/** A P-256 key made through the API (every configuration signs with a key it generated). */
async function generateKey(url: string, token: string): Promise<string> {
  const res = await fetch(`${url}/v1/keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ keySpec: "ECC_NIST_P256" }),
  });
  if (res.status !== 201) throw new Error(`generating a key answered ${res.status}: ${await res.text()}`);
  return (await res.json()).id;
}

async function startEdge(dataDir: string, layout: "worker" | "process"): Promise<Target> {
  const running = await startDeno({
    args: ["--allow-all", EDGE, "run"],
    ready: /keycell ready on (http:\/\/\S+)/,
    env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_LISTEN: "127.0.0.1:0", KEYCELL_SIGNER: layout, KEYCELL_MAX_IN_FLIGHT: "100000" },
    timeoutMs: 120_000,
  });
  const server = { ...running, url: running.ready[1] };
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  return { server, token, keyId: await generateKey(server.url, token), cpuPids: childrenOf(server.pid) };
}

const CONFIGS: Config[] = [
  {
    name: `serve, worker pool of ${cores}`,
    async start(dir) {
      const dataDir = `${dir}/serve`;
      const server = await startServer({
        dataDir,
        env: { KEYCELL_SIGNER: "worker", KEYCELL_SIGNER_INSTANCES: String(cores), KEYCELL_MAX_IN_FLIGHT: "100000" },
        timeoutMs: 60_000,
      });
      const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
      return [{ server, token, keyId: await generateKey(server.url, token), cpuPids: [server.pid] }];
    },
  },
  { name: "workerd, one process (api + signer isolates)", start: async (dir) => [await startEdge(`${dir}/edge-one`, "worker")] },
  { name: "workerd, two processes (api, signer over a Unix socket)", start: async (dir) => [await startEdge(`${dir}/edge-two`, "process")] },
  {
    name: "workerd, one process on each of two ports, driven at once",
    start: async (dir) => [await startEdge(`${dir}/edge-a`, "worker"), await startEdge(`${dir}/edge-b`, "worker")],
  },
];

/** Drives every deployment of a configuration at once, splitting the connections; sums the figures. */
async function drive(targets: Target[], seconds: number): Promise<{ rate: number; cpuPerRequestUs: number; figures: WrkFigures[] }> {
  const cpu = () => targets.flatMap((t) => t.cpuPids).reduce((sum, pid) => sum + processCpuSeconds(pid), 0);
  const before = cpu();
  const figures = await Promise.all(targets.map((t) =>
    wrkRun("wrk", t.server.url, `/v1/keys/${t.keyId}/sign`, t.token, Math.round(CONNECTIONS / targets.length), seconds)
  ));
  const spent = cpu() - before;
  const requests = figures.reduce((n, f) => n + f.requests, 0);
  return { rate: figures.reduce((n, f) => n + f.rate, 0), cpuPerRequestUs: (spent * 1e6) / requests, figures };
}

function cpuModel(): string {
  return /^model name\s*:\s*(.+)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "unknown";
}

function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

async function output(command: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
    return (new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr)).trim().split("\n")[0];
  } catch {
    return "not installed";
  }
}

if (import.meta.main) {
  const dir = await Deno.makeTempDir({ prefix: "keycell-bench-edge-" });
  const loadBefore = loadAverage();
  const started: Target[][] = [];
  try {
    for (const config of CONFIGS) {
      log(`starting ${config.name}`);
      started.push(await config.start(dir));
    }
    for (const targets of started) await drive(targets, 1); // warm-up: JIT in the servers and the guests
    const runs = CONFIGS.map(() => [] as { rate: number; cpuPerRequestUs: number; figures: WrkFigures[] }[]);
    for (let round = 0; round < settings.rounds; round++) {
      for (let k = 0; k < CONFIGS.length; k++) {
        const i = (k + round) % CONFIGS.length;
        const run = await drive(started[i], settings.seconds);
        runs[i].push(run);
        log(`round ${round + 1}/${settings.rounds}: ${CONFIGS[i].name}: ${run.rate.toFixed(0)}/s, ${run.cpuPerRequestUs.toFixed(0)} µs CPU per request`);
      }
    }
    const rows: Row[] = CONFIGS.map((config, i) => {
      const mid = runs[i].toSorted((a, b) => a.rate - b.rate)[(runs[i].length - 1) >> 1];
      // For several ports at once, the worst port's percentiles.
      return {
        config: config.name,
        requestsPerSecond: median(runs[i].map((r) => r.rate)),
        rounds: runs[i].map((r) => Math.round(r.rate)),
        serverCpuPerRequestUs: median(runs[i].map((r) => r.cpuPerRequestUs)),
        p50Ms: Math.max(...mid.figures.map((f) => f.p50)) / 1000,
        p99Ms: Math.max(...mid.figures.map((f) => f.p99)) / 1000,
        non2xx: runs[i].flatMap((r) => r.figures).reduce((n, f) => n + f.non2xx, 0),
        socketErrors: runs[i].flatMap((r) => r.figures).reduce((n, f) => n + f.socketErrors, 0),
      };
    });
    const workerdVersion = await output(`${ROOT}/tools/workerd/node_modules/@cloudflare/workerd-linux-64/bin/workerd`, ["--version"]);
    const result = {
      date: new Date().toISOString(),
      command: `deno task bench:edge${quick ? " --quick" : ""}`,
      machine: { cpu: cpuModel(), cores, loadBefore, loadAfter: loadAverage(), kernel: Deno.osRelease() },
      versions: { deno: Deno.version.deno, workerd: workerdVersion, wrk: (await output("wrk", ["-v"])).split(" Copyright")[0] },
      settings: { ...settings, connections: CONNECTIONS },
      rows,
    };
    await Deno.mkdir(outDir, { recursive: true });
    await Deno.writeTextFile(`${outDir}/results.json`, JSON.stringify(result, null, 2) + "\n");
    await Deno.writeTextFile(`${outDir}/RESULTS.md`, render(result));
    log(`wrote ${outDir}/RESULTS.md and results.json`);
  } finally {
    await Promise.all(started.flat().map((t) => t.server.stop()));
    await Deno.remove(dir, { recursive: true });
  }
}

function render(r: {
  date: string;
  command: string;
  machine: { cpu: string; cores: number; loadBefore: string; loadAfter: string; kernel: string };
  versions: Record<string, string>;
  settings: { rounds: number; seconds: number; connections: number };
  rows: Row[];
}): string {
  return [
    "# keycell on workerd: HTTP P-256 signing beside `serve`",
    "",
    `Written by \`${r.command}\` on ${r.date}${quick ? " (quick: a smoke run, not for quoting)" : ""}.`,
    "",
    "| machine | |",
    "|---|---|",
    `| CPU | ${r.machine.cpu} (${r.machine.cores} cores visible) |`,
    `| kernel | ${r.machine.kernel} |`,
    `| load average before / after | ${r.machine.loadBefore} / ${r.machine.loadAfter} |`,
    ...Object.entries(r.versions).map(([k, v]) => `| ${k} | ${v} |`),
    "",
    `Every configuration runs at once and is driven in turn, ${r.settings.rounds} round(s) of ${r.settings.seconds} s in rotating order; ` +
    `wrk, one thread, ${r.settings.connections} connections (split across ports when there are two), ECDSA_SHA_256 over a 32-byte DIGEST. ` +
    "Requests/s is the median over rounds; p50/p99 are wrk's, of the median round (for two ports, the worse port's); " +
    "server CPU per request counts the server processes' user + system time (/proc/PID/stat: `serve`'s process, or every workerd process), " +
    "not the launcher's or wrk's. wrk shares the same cores.",
    "",
    "| configuration | requests/s | rounds | server CPU per request (µs) | p50 (ms) | p99 (ms) | non-2xx | socket errors |",
    "|---|---:|---|---:|---:|---:|---:|---:|",
    ...r.rows.map((row) =>
      `| ${row.config} | ${row.requestsPerSecond.toFixed(0)} | ${row.rounds.join(", ")} | ${row.serverCpuPerRequestUs.toFixed(0)} | ` +
      `${row.p50Ms.toFixed(2)} | ${row.p99Ms.toFixed(2)} | ${row.non2xx} | ${row.socketErrors} |`
    ),
    "",
  ].join("\n");
}
