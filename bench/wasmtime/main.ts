/**
 * KEYCELL_ENGINE=wasmtime against V8, in one run so a neighbour's load falls on both alike:
 *
 * 1. The engine: RSA-2048 PKCS#1 and ECDSA P-256 signatures per CPU-second of the guest, the
 *    32-bit (baseline) and wide modules, in V8 (a compartment in this isolate, this process's CPU)
 *    and in wasmtime (a `WasmtimeTransport` child, the child's CPU; with this process's CPU for
 *    the pipe added, as a second figure). Rounds rotate over the four.
 * 2. The key server: `keycell keyserver` with each engine and guest, two guests each, signing
 *    Keyless requests (16 in flight on one TCP connection); CPU per signature of the key server
 *    process and its wasmtime children together.
 *
 *   deno task bench:wasmtime [SECONDS] [ROUNDS]   (builds the host first)
 *
 * Prints a markdown report (CPU model first).
 *
 * @module
 */

import process from "node:process";
import { Compartment } from "../../src/guest/compartment.ts";
import { encodeRequest, keyIdBytes, Op } from "../../src/core/protocol.ts";
import { WasmtimeTransport } from "../../src/deno/wasmtime_transport.ts";
import { KeylessClient } from "../../src/keyless/client.ts";
import { Opcode } from "../../src/keyless/codec.ts";
import { keylessNames } from "../../src/core/key_names.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { startKeycell, wasmtimeChildren } from "../../test/_command.ts";
import { median } from "../_stats.ts";

const SECONDS = Number(Deno.args[0] ?? 2);
const ROUNDS = Number(Deno.args[1] ?? 3);
const IN_FLIGHT = 16;
const CLOCK_TICKS = 100;

const GUESTS = {
  baseline: Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url)),
  wide: Deno.readFileSync(new URL("../../wasm/signer-wide.wasm", import.meta.url)),
};
type GuestName = keyof typeof GUESTS;

const dir = await Deno.makeTempDir({ prefix: "keycell-bench-wasmtime-" });
try {
  const [rsa, p256] = await makeKeys(dir, ["RSA_2048", "ECC_NIST_P256"]);
  const ROWS = [
    { name: "RSA-2048 PKCS#1", key: rsa, alg: 1, opcode: Opcode.RSA_SIGN_SHA256 },
    { name: "ECDSA P-256", key: p256, alg: 7, opcode: Opcode.ECDSA_SIGN_SHA256 },
  ];
  const signRequest = (row: typeof ROWS[number]) => encodeRequest(Op.SIGN, keyIdBytes(row.key.id)!, new Uint8Array([row.alg, 0]), new Uint8Array(32).fill(9));

  console.log(`# KEYCELL_ENGINE=wasmtime against V8\n`);
  console.log(`Run ${new Date().toISOString()}; CPU: ${cpuModel()}, ${navigator.hardwareConcurrency} cores; load average before: ${loadAverage()}.`);
  console.log(`Deno ${Deno.version.deno} (V8 ${Deno.version.v8}); wasmtime 48.0.8 (Cranelift). ${SECONDS} s per measurement, ${ROUNDS} rounds, medians.\n`);

  // 1. The engines, guest alone.
  const v8 = Object.fromEntries(
    (Object.keys(GUESTS) as GuestName[]).map((g) => [g, Compartment.create({ wasm: GUESTS[g], keys: keyFiles([rsa.path, p256.path]) })]),
  ) as Record<GuestName, Compartment>;
  const wasmtime = {} as Record<GuestName, WasmtimeTransport>;
  for (const g of Object.keys(GUESTS) as GuestName[]) wasmtime[g] = await WasmtimeTransport.start({ wasm: GUESTS[g], keysDir: `${dir}/keys` });
  type Config = `${"v8" | "wasmtime"} ${GuestName}`;
  const configs: Config[] = ["v8 baseline", "v8 wide", "wasmtime baseline", "wasmtime wide"];
  const guestRates = new Map<string, number[]>();
  const totalRates = new Map<string, number[]>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const row of ROWS) {
      const request = signRequest(row);
      for (let i = 0; i < configs.length; i++) {
        const config = configs[(i + round) % configs.length];
        const [engine, guest] = config.split(" ") as ["v8" | "wasmtime", GuestName];
        const key = `${row.name}|${config}`;
        if (engine === "v8") {
          const r = v8Rate(v8[guest], request);
          push(guestRates, key, r);
          push(totalRates, key, r);
        } else {
          const { guest: g, total } = await wasmtimeRate(wasmtime[guest], request);
          push(guestRates, key, g);
          push(totalRates, key, total);
        }
      }
    }
  }
  for (const t of Object.values(wasmtime)) await t.close();

  console.log(`## The guest alone: signatures per CPU-second\n`);
  console.log(`V8: a compartment in this isolate (this process's CPU). wasmtime: one child, ${IN_FLIGHT} requests in flight; "guest" counts the child's CPU, "with pipe" adds this process's.\n`);
  console.log(`| signature | V8 baseline | V8 wide | wasmtime baseline (with pipe) | wasmtime wide (with pipe) | wasmtime/V8 baseline | wasmtime/V8 wide | wasmtime wide / V8 baseline |`);
  console.log(`|---|---|---|---|---|---|---|---|`);
  for (const row of ROWS) {
    const m = (c: Config, from = guestRates) => median(from.get(`${row.name}|${c}`)!);
    console.log(
      `| ${row.name} | ${fmt(m("v8 baseline"))} | ${fmt(m("v8 wide"))} | ${fmt(m("wasmtime baseline"))} (${fmt(m("wasmtime baseline", totalRates))}) | ` +
        `${fmt(m("wasmtime wide"))} (${fmt(m("wasmtime wide", totalRates))}) | ${ratio(m("wasmtime baseline"), m("v8 baseline"))} | ` +
        `${ratio(m("wasmtime wide"), m("v8 wide"))} | ${ratio(m("wasmtime wide"), m("v8 baseline"))} |`,
    );
  }

  // 2. The key server.
  console.log(`\n## The key server: CPU per signature (key server process and its wasmtime children)\n`);
  console.log(`\`keycell keyserver\`, two guests, Keyless over TCP, ${IN_FLIGHT} requests in flight.\n`);
  console.log(`| signature | engine, guest | signatures/s | CPU ms per signature | signatures per CPU-second | vs V8 baseline |`);
  console.log(`|---|---|---|---|---|---|`);
  const servers: [string, Record<string, string>][] = [
    ["V8, baseline", { KEYCELL_GUEST: "baseline" }],
    ["V8, wide", { KEYCELL_GUEST: "wide" }],
    ["wasmtime, baseline", { KEYCELL_ENGINE: "wasmtime", KEYCELL_GUEST: "baseline" }],
    ["wasmtime, wide", { KEYCELL_ENGINE: "wasmtime", KEYCELL_GUEST: "wide" }],
  ];
  const results = new Map<string, { perSecond: number[]; cpuMs: number[] }>();
  const running = [];
  for (const [name, env] of servers) {
    const server = await startKeycell("keyserver", {
      env: {
        ...env,
        KEYCELL_DATA_DIR: `${dir}/data-${name.replace(/\W+/g, "-")}`,
        KEYCELL_KEYS_DIR: `${dir}/keys`,
        KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0",
        KEYCELL_SIGNER_INSTANCES: "2",
      },
      ready: /tcp:127\.0\.0\.1:(\d+)/,
    });
    const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(server.ready[1]) });
    running.push({ name, server, client });
  }
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const row of ROWS) {
        for (let i = 0; i < running.length; i++) {
          const { name, server, client } = running[(i + round) % running.length];
          const r = await keyserverRate(server.pid, client, row.opcode, keylessNames(row.key.spki)!.ski);
          const entry = results.get(`${row.name}|${name}`) ?? { perSecond: [], cpuMs: [] };
          entry.perSecond.push(r.perSecond);
          entry.cpuMs.push(r.cpuMs);
          results.set(`${row.name}|${name}`, entry);
        }
      }
    }
  } finally {
    for (const { server, client } of running) {
      client.close();
      await server.stop();
    }
  }
  for (const row of ROWS) {
    const base = median(results.get(`${row.name}|V8, baseline`)!.cpuMs);
    for (const [name] of servers) {
      const { perSecond, cpuMs } = results.get(`${row.name}|${name}`)!;
      const ms = median(cpuMs);
      console.log(`| ${row.name} | ${name} | ${fmt(median(perSecond))} | ${ms.toFixed(3)} | ${fmt(1000 / ms)} | ${ratio(base, ms)} |`);
    }
  }
  console.log(`\nLoad average after: ${loadAverage()}.`);
} finally {
  await Deno.remove(dir, { recursive: true });
}

/** Key files as the compartment reads them. */
function keyFiles(paths: string[]) {
  return {
    name: "bench keys",
    list: () => paths,
    size: (p: string) => Deno.statSync(p).size,
    read: (p: string, into: Uint8Array) => into.set(Deno.readFileSync(p)),
  };
}

function push(map: Map<string, number[]>, key: string, value: number): void {
  map.set(key, [...map.get(key) ?? [], value]);
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** utime + stime of a process (every thread), in seconds. */
function processCpu(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function v8Rate(compartment: Compartment, request: Uint8Array): number {
  const c0 = cpuSeconds();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < SECONDS * 1000) {
    compartment.handle(request);
    n++;
  }
  return n / (cpuSeconds() - c0);
}

async function wasmtimeRate(transport: WasmtimeTransport, request: Uint8Array): Promise<{ guest: number; total: number }> {
  const child0 = processCpu(transport.pid);
  const own0 = cpuSeconds();
  const t0 = performance.now();
  let n = 0;
  const worker = async () => {
    while (performance.now() - t0 < SECONDS * 1000) {
      await transport.request(request);
      n++;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const child = processCpu(transport.pid) - child0;
  const own = cpuSeconds() - own0;
  return { guest: n / child, total: n / (child + own) };
}

async function keyserverRate(pid: number, client: KeylessClient, opcode: number, ski: Uint8Array): Promise<{ perSecond: number; cpuMs: number }> {
  const pids = [pid, ...wasmtimeChildren(pid)];
  const cpu0 = pids.map(processCpu);
  const t0 = performance.now();
  let n = 0;
  const worker = async () => {
    while (performance.now() - t0 < SECONDS * 1000) {
      const res = await client.request({ opcode, payload: new Uint8Array(32).fill(n & 0xff), ski });
      if (res.kind !== "ok") throw new Error(`the key server answered ${JSON.stringify(res)}`);
      n++;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = pids.map(processCpu).reduce((sum, c, i) => sum + c - cpu0[i], 0);
  return { perSecond: n / seconds, cpuMs: (cpu * 1000) / n };
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}x`;
}

function loadAverage(): string {
  return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
}

function cpuModel(): string {
  const out = new Deno.Command("lscpu", { stdout: "piped" }).outputSync();
  return /^Model name:\s*(.+)$/m.exec(new TextDecoder().decode(out.stdout))?.[1] ?? "unknown";
}
