/**
 * `deno task bench:keyserver [--quick] [--compare DIR] [--rounds N] [--seconds S] [--in-flight N] [--out DIR]`:
 * what the Keyless key server costs per signature against the same guest called directly.
 *
 * Key servers are started as `deno task keyserver` runs them (the task's permissions and flags,
 * keys imported from a key directory, Keyless on loopback TCP), one with one guest and one with a
 * guest per core (KEYCELL_SIGNER_INSTANCES), and KEYCELL_ENGINE and KEYCELL_GUEST passed on when set. A client
 * in this process keeps 16 sign requests in flight on one connection; the key server's CPU (user +
 * system, its children included, from /proc) over the answered signatures is its price per
 * signature. The guest called directly (`Compartment.handle` in a loop in this process, and one
 * loop per core in workers) is measured in the same rounds, in rotating order, so a neighbour's
 * load falls on every row alike. With `--compare DIR`, the key servers of the tree at DIR (another
 * worktree, say) run in the same rounds too: before and after, interleaved.
 *
 * Writes DIR/KEYSERVER.md and DIR/keyserver.json (DIR: bench/, or .cache/bench/ for `--quick`).
 *
 * @module
 */

import process from "node:process";
import { openCompartment } from "../src/guest/files.ts";
import { ALGORITHM_CODES, type AlgorithmName, encodeRequest, keyIdBytes, type KeySpec, Op } from "../src/core/protocol.ts";
import { keylessNames } from "../src/core/key_names.ts";
import { KeylessClient } from "../src/keyless/client.ts";
import { Opcode } from "../src/keyless/codec.ts";
import { permissionsOf, type RunningProcess, startDeno } from "../test/_command.ts";
import { makeKeys } from "../test/_fixtures.ts";
import { WASM } from "../test/_wasm.ts";
import { processTree } from "../test/reliability/_measure.ts";
import { ParallelDirect } from "./boundaries.ts";
import { cpuModel, gitCommit, loadAverage, type Machine, machineRows } from "./_machine.ts";
import { KEPT_MARKER } from "./_report.ts";
import { fmt, median } from "./_stats.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
/**
 * Connections to a key server of several processes (KEYCELL_KEYSERVER_PROCESSES): the kernel gives
 * each connection to one process, so several are needed for every process to get some (with 8 over
 * 2 processes, all on one happens 1 time in 128). Each connection keeps IN_FLIGHT / 8 calls open.
 */
const PROCESS_CONNECTIONS = 8;
const CORES = navigator.hardwareConcurrency;
/** The row subject of a key server of a process per core. */
const processesSubject = `key server, ${CORES} processes of 1 guest`;
/** Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`: 100 on Linux). */
const CLOCK_TICKS = 100;

/** One signing operation, as Keyless names it and as the guest does. */
interface Algorithm {
  name: string;
  keySpec: KeySpec;
  algorithm: AlgorithmName;
  opcode: number;
}

const ALGORITHMS: Algorithm[] = [
  { name: "RSA-2048 PKCS#1 SHA-256", keySpec: "RSA_2048", algorithm: "RSASSA_PKCS1_V1_5_SHA_256", opcode: Opcode.RSA_SIGN_SHA256 },
  { name: "ECDSA P-256 SHA-256", keySpec: "ECC_NIST_P256", algorithm: "ECDSA_SHA_256", opcode: Opcode.ECDSA_SIGN_SHA256 },
];

/** One round of one row: operations per wall-clock second and CPU µs per operation. */
interface Sample {
  rate: number;
  cpuUs: number;
}

/** One row of the table. */
interface Row {
  /** What was measured: "key server, 2 guests", "guest called directly", ... */
  subject: string;
  /** The tree whose key server it was ("this tree", or the --compare directory). */
  tree?: string;
  operation: string;
  inFlight: number;
  samples: Sample[];
  /** Medians over rounds. */
  opsPerSecond?: number;
  cpuUsPerOp?: number;
}

interface Measurement {
  row: Row;
  run(seconds: number): Promise<Sample>;
}

const args = parseArgs(Deno.args);
const quick = args.has("quick");
/** Calls kept open at once against a key server (`--in-flight N`, default 16). */
const IN_FLIGHT = Number(args.get("in-flight") ?? 16);
if (!Number.isInteger(IN_FLIGHT) || IN_FLIGHT < 1) throw new Error(`--in-flight takes a whole number of calls, not ${args.get("in-flight")}`);
const rounds = Number(args.get("rounds") ?? (quick ? 1 : 5));
const seconds = Number(args.get("seconds") ?? (quick ? 0.5 : 2));
const outDir = args.get("out") ?? (quick ? `${ROOT}/.cache/bench` : `${ROOT}/bench`);
const compare = args.get("compare");
const engine = Deno.env.get("KEYCELL_ENGINE");
const guest = Deno.env.get("KEYCELL_GUEST");
const log = (line: string) => console.error(`bench:keyserver: ${line}`);

const workDir = await Deno.makeTempDir({ prefix: "keycell-bench-keyserver-" });
const servers: RunningProcess[] = [];
const closers: (() => void | Promise<void>)[] = [];
const loadBefore = loadAverage();
try {
  const keys = await makeKeys(workDir, ALGORITHMS.map((a) => a.keySpec));
  const keysDir = `${workDir}/keys`;
  const measurements: Measurement[] = [];

  // The guest called directly: one loop in this process, and one per core in workers.
  const compartment = openCompartment({ wasm: WASM, keysDir });
  for (const [i, algorithm] of ALGORITHMS.entries()) {
    const request = guestRequest(algorithm, keys[i].id);
    if (compartment.handle(request)[0] !== 0) throw new Error(`the guest refused ${algorithm.name}`);
    measurements.push({
      row: { subject: "guest called directly", operation: algorithm.name, inFlight: 1, samples: [] },
      run: (s) => Promise.resolve(directLoop(() => compartment.handle(request), s)),
    });
    const parallel = await ParallelDirect.start(WASM, keysDir, keys[i].id, CORES, request);
    closers.push(() => parallel.close());
    measurements.push({
      row: { subject: `guest called directly, ${CORES} workers at once`, operation: algorithm.name, inFlight: CORES, samples: [] },
      run: (s) => ownCpu(() => parallel.run(s).then((rate) => rate * s)),
    });
  }

  const trees = [{ name: "this tree", root: ROOT }, ...compare === undefined ? [] : [{ name: compare, root: compare }]];
  // A key server of a process per core, each with one guest in its own isolate (this tree's only).
  if (CORES > 1) {
    const server = await startKeyServer(ROOT, `${workDir}/data-processes`, keysDir, 1, { KEYCELL_KEYSERVER_PROCESSES: String(CORES) });
    servers.push(server);
    const port = Number(server.ready[1]);
    const clients = await Promise.all(Array.from({ length: PROCESS_CONNECTIONS }, () => KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port })));
    closers.push(() => clients.forEach((c) => c.close()));
    for (const [i, algorithm] of ALGORITHMS.entries()) {
      const ski = keylessNames(keys[i].spki)!.ski;
      const digest = new Uint8Array(32).fill(7);
      measurements.push({
        row: { subject: processesSubject, tree: "this tree", operation: algorithm.name, inFlight: IN_FLIGHT, samples: [] },
        // Each connection keeps its own share of the calls in flight, as separate clients do: the
        // process holding fewer connections is not held to the pace of the one holding more.
        run: (s) => serverCpu(server.pid, () => drive(s, (lane) => clients[lane % clients.length].request({ opcode: algorithm.opcode, payload: digest, ski }))),
      });
    }
  }
  for (const tree of trees) {
    for (const instances of [...new Set([1, CORES])]) {
      const server = await startKeyServer(tree.root, `${workDir}/data-${servers.length}`, keysDir, instances);
      servers.push(server);
      const port = Number(server.ready[1]);
      const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port });
      closers.push(() => client.close());
      const subject = `key server, ${instances} guest${instances === 1 ? "" : "s"}`;
      for (const [i, algorithm] of ALGORITHMS.entries()) {
        const ski = keylessNames(keys[i].spki)!.ski;
        const digest = new Uint8Array(32).fill(7);
        measurements.push({
          row: { subject, tree: tree.name, operation: algorithm.name, inFlight: IN_FLIGHT, samples: [] },
          run: (s) => serverCpu(server.pid, () => drive(s, () => client.request({ opcode: algorithm.opcode, payload: digest, ski }))),
        });
      }
      if (instances === CORES) {
        // What a request costs the key server before any guest is involved.
        measurements.push({
          row: { subject, tree: tree.name, operation: "PING (no guest)", inFlight: IN_FLIGHT, samples: [] },
          run: (s) => serverCpu(server.pid, () => drive(s, () => client.request({ opcode: Opcode.PING, payload: new Uint8Array(32) }), "pong")),
        });
      }
    }
  }

  log(`${measurements.length} rows x ${rounds} rounds of ${seconds} s`);
  for (const m of measurements) await m.run(Math.min(0.5, seconds)); // warm-up: JIT, first unseal
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < measurements.length; k++) {
      const { row, run } = measurements[(k + round) % measurements.length];
      const sample = await run(seconds);
      row.samples.push(sample);
      log(`round ${round + 1}/${rounds}: ${row.subject}${row.tree && compare ? ` (${row.tree})` : ""}, ${row.operation}: ${fmt(sample.rate)}/s, ${fmt(sample.cpuUs)} µs CPU each`);
    }
  }
  const rows = measurements.map(({ row }) => ({
    ...row,
    opsPerSecond: median(row.samples.map((s) => s.rate)),
    cpuUsPerOp: median(row.samples.map((s) => s.cpuUs)),
  }));

  const run = {
    date: new Date().toISOString(),
    command: ["deno task bench:keyserver", ...Deno.args].join(" "),
    engine: engine ?? "default (V8)",
    guest: guest ?? "default (baseline)",
    machine: { cpu: cpuModel(), cores: CORES, loadBefore, loadAfter: loadAverage(), kernel: Deno.osRelease() },
    deno: `${Deno.version.deno} (V8 ${Deno.version.v8})`,
    commits: Object.fromEntries(await Promise.all(trees.map(async (t) => [t.name, await gitCommit(t.root)]))),
    settings: { rounds, seconds, inFlight: IN_FLIGHT, connections: 1, connectionsToProcesses: PROCESS_CONNECTIONS },
    rows,
    targets: targetsOf(rows, "this tree"),
    compared: compare === undefined ? undefined : targetsOf(rows, compare),
  };
  await Deno.mkdir(outDir, { recursive: true });
  let kept = "";
  try {
    const previous = await Deno.readTextFile(`${outDir}/KEYSERVER.md`);
    const at = previous.indexOf(KEPT_MARKER);
    if (at >= 0) kept = previous.slice(at + KEPT_MARKER.length);
  } catch {
    // first run in this directory
  }
  await Deno.writeTextFile(`${outDir}/KEYSERVER.md`, render(run, kept));
  await Deno.writeTextFile(`${outDir}/keyserver.json`, JSON.stringify(run, null, 2) + "\n");
  log(`wrote ${outDir}/KEYSERVER.md and ${outDir}/keyserver.json`);
} finally {
  for (const close of closers) await close();
  for (const server of servers) await server.stop();
  await Deno.remove(workDir, { recursive: true });
}

interface Target {
  name: string;
  value: string;
  goal: string;
  met: boolean | undefined;
}

/** The two targets, per algorithm, for the key servers of one tree. */
function targetsOf(rows: Row[], tree: string): Target[] {
  const find = (subject: string, operation: string) =>
    rows.find((r) => r.subject === subject && r.operation === operation && (r.tree === undefined || r.tree === tree));
  const many = `key server, ${CORES} guests`;
  return ALGORITHMS.flatMap((a): Target[] => {
    const processes = find(processesSubject, a.name);
    const server = find(many, a.name)?.cpuUsPerOp;
    const direct = find("guest called directly", a.name)?.cpuUsPerOp;
    const two = find(many, a.name)?.opsPerSecond;
    const one = find("key server, 1 guest", a.name)?.opsPerSecond;
    const cpu = server !== undefined && direct !== undefined ? server / direct : undefined;
    const scale = two !== undefined && one !== undefined ? two / one : undefined;
    return [
      {
        name: `${a.name}: key server (${CORES} guests) CPU per signature / guest called directly`,
        value: cpu === undefined ? "—" : `${fmt(server)} / ${fmt(direct)} µs = ${cpu.toFixed(2)}x`,
        goal: "<= 1.2x",
        met: cpu === undefined ? undefined : cpu <= 1.2,
      },
      {
        name: `${a.name}: key server throughput, ${CORES} guests / 1 guest`,
        value: scale === undefined ? "—" : `${fmt(two)} / ${fmt(one)} = ${scale.toFixed(2)}x`,
        goal: ">= 1.8x",
        met: scale === undefined ? undefined : scale >= 1.8,
      },
      ...processes === undefined ? [] : [ratioTarget(
        `${a.name}: key server (${CORES} processes) CPU per signature / guest called directly`,
        processes.cpuUsPerOp,
        direct,
        "µs",
        "<= 1.2x",
        (x) => x <= 1.2,
      ), ratioTarget(
        `${a.name}: key server throughput, ${CORES} processes (${PROCESS_CONNECTIONS} connections) / 1 guest (1 connection)`,
        processes.opsPerSecond,
        one,
        "",
        ">= 1.8x",
        (x) => x >= 1.8,
      )],
    ];
  });
}

function ratioTarget(name: string, value: number | undefined, base: number | undefined, unit: string, goal: string, met: (x: number) => boolean): Target {
  if (value === undefined || base === undefined) return { name, value: "—", goal, met: undefined };
  const x = value / base;
  return { name, value: `${fmt(value)} / ${fmt(base)}${unit ? ` ${unit}` : ""} = ${x.toFixed(2)}x`, goal, met: met(x) };
}

function render(run: {
  date: string;
  command: string;
  engine: string;
  guest: string;
  machine: Machine;
  deno: string;
  commits: Record<string, string>;
  settings: Record<string, unknown>;
  rows: Row[];
  targets: Target[];
  compared?: Target[];
}, kept: string): string {
  const out: string[] = [];
  const line = (s = "") => out.push(s);
  const targets = (list: Target[]) => {
    line("| target | measured | goal | met |");
    line("|---|---|---|---|");
    for (const t of list) line(`| ${t.name} | ${t.value} | ${t.goal} | ${t.met === undefined ? "not measured" : t.met ? "yes" : "**no**"} |`);
  };
  line("# Keyless key server: CPU per signature and throughput");
  line();
  line(`Written by \`${run.command}\` on ${run.date}.`);
  line();
  machineRows(run.machine).forEach((row) => line(row));
  line(`| Deno | ${run.deno} |`);
  line(`| KEYCELL_ENGINE | ${run.engine} |`);
  line(`| KEYCELL_GUEST (the key servers'; the guest called directly is the 32-bit one) | ${run.guest} |`);
  for (const [tree, commit] of Object.entries(run.commits)) line(`| commit of ${tree} | ${commit} |`);
  line();
  line(`Settings: ${Object.entries(run.settings).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(", ")}.`);
  line();
  line("## Targets");
  line();
  targets(run.targets);
  if (run.compared) {
    line();
    line(`The same targets for the key servers of ${Object.keys(run.commits)[1]}, measured in the same rounds:`);
    line();
    targets(run.compared);
  }
  line();
  line("## Rows");
  line();
  line("Key servers run as `deno task keyserver` runs them (keys imported with KEYCELL_KEYS_DIR, Keyless on");
  line("loopback TCP, KEYCELL_SIGNER_INSTANCES guests in workers, or KEYCELL_KEYSERVER_PROCESSES processes");
  line(`of one guest each); the client in the benchmark's process keeps ${IN_FLIGHT} requests in flight on one`);
  line(`connection (over ${PROCESS_CONNECTIONS} to the processes), on the same cores. A key server's CPU is the user +`);
  line("system time of its process and every process under it (every thread) from /proc over the answered");
  line("requests; the guest called directly is `Compartment.handle` in a loop, this process's CPU time.");
  line("Rows alternate by round in rotating order; figures are medians over rounds.");
  line();
  line("| subject | tree | operation | in flight | per second | CPU µs each | per second, by round |");
  line("|---|---|---|---|---|---|---|");
  for (const r of run.rows) {
    line(`| ${r.subject} | ${r.tree ?? ""} | ${r.operation} | ${r.inFlight} | ${fmt(r.opsPerSecond)} | ${fmt(r.cpuUsPerOp)} | ${r.samples.map((s) => fmt(s.rate)).join(", ")} |`);
  }
  line();
  line(KEPT_MARKER);
  if (kept.trim()) line(kept.replace(/^\n+/, ""));
  return out.join("\n").replace(/\n{3,}/g, "\n\n") + "\n";
}

/** The guest's request for one signature of a 32-byte digest. */
function guestRequest(algorithm: Algorithm, keyId: string): Uint8Array {
  return encodeRequest(Op.SIGN, keyIdBytes(keyId)!, new Uint8Array([ALGORITHM_CODES[algorithm.algorithm], 0]), new Uint8Array(32).fill(7));
}

/** A key server from the tree at `root`, as its `keyserver` task runs it, Keyless on a free TCP port. */
async function startKeyServer(root: string, dataDir: string, keysDir: string, instances: number, env: Record<string, string> = {}): Promise<RunningProcess> {
  return await startDeno({
    args: ["--config", `${root}/deno.json`, ...permissionsOf("keyserver"), `${root}/src/main.ts`, "keyserver"],
    env: {
      KEYCELL_DATA_DIR: dataDir,
      KEYCELL_KEYS_DIR: keysDir,
      KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0",
      KEYCELL_SIGNER_INSTANCES: String(instances),
      ...engine === undefined ? {} : { KEYCELL_ENGINE: engine },
      ...guest === undefined ? {} : { KEYCELL_GUEST: guest },
      ...env,
    },
    ready: /ready on .*tcp:127\.0\.0\.1:(\d+)/,
    timeoutMs: 120_000,
  });
}

/** Calls `call` in a loop for `seconds`; this process's CPU per call. */
function directLoop(call: () => unknown, seconds: number): Sample {
  const cpu = process.cpuUsage();
  const start = performance.now();
  let ops = 0;
  let elapsed = 0;
  while (elapsed < seconds * 1000) {
    call();
    ops++;
    elapsed = performance.now() - start;
  }
  const used = process.cpuUsage(cpu);
  return { rate: (ops * 1000) / elapsed, cpuUs: (used.user + used.system) / ops };
}

/** Runs `work` (which answers how many operations it did); this process's CPU per operation. */
async function ownCpu(work: () => Promise<number>): Promise<Sample> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  const ops = await work();
  const elapsed = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return { rate: (ops * 1000) / elapsed, cpuUs: (used.user + used.system) / ops };
}

/** Runs `work` against the process `pid`; that process's CPU per operation. */
async function serverCpu(pid: number, work: () => Promise<{ ops: number; elapsedMs: number }>): Promise<Sample> {
  const before = cpuTicks(pid);
  const { ops, elapsedMs } = await work();
  const ticks = cpuTicks(pid) - before;
  return { rate: (ops * 1000) / elapsedMs, cpuUs: (ticks * 1e6) / CLOCK_TICKS / ops };
}

/**
 * User + system clock ticks of a process and every process under it: its own and its waited-for
 * children's (/proc/PID/stat fields 14-17), for each process of the tree. A child still running
 * (a key server process, a wasmtime guest) counts only in its own stat until it is waited for.
 */
function cpuTicks(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${p}/stat`);
      // The command name (field 2) is in parentheses and may hold spaces: count from after it.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    } catch {
      // ended while it was read
    }
  }
  return ticks;
}

/** Keeps IN_FLIGHT calls open for `seconds`, each lane one after another; every answer must be of the kind `expected`. */
async function drive(seconds: number, call: (lane: number) => Promise<{ kind: string }>, expected = "ok"): Promise<{ ops: number; elapsedMs: number }> {
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let ops = 0;
  let end = start;
  await Promise.all(Array.from({ length: IN_FLIGHT }, async (_, lane) => {
    while (performance.now() < deadline) {
      const answer = await call(lane);
      if (answer.kind !== expected) throw new Error(`the key server answered ${JSON.stringify(answer)}`);
      ops++;
      end = performance.now();
    }
  }));
  return { ops, elapsedMs: end - start };
}

function parseArgs(argv: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i].replace(/^--/, "");
    if (name === "quick") flags.set(name, "");
    else if (["compare", "rounds", "seconds", "out", "in-flight"].includes(name) && i + 1 < argv.length) flags.set(name, argv[++i]);
    else throw new Error(`usage: deno task bench:keyserver [--quick] [--compare DIR] [--rounds N] [--seconds S] [--in-flight N] [--out DIR]; not ${argv[i]}`);
  }
  return flags;
}
