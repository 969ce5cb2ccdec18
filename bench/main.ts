/**
 * `deno task bench [--quick] [--out DIR]`: the crypto-core, boundaries and HTTP benchmarks in one
 * run, written to DIR/RESULTS.md and DIR/results.json (DIR: bench/ for a full run, .cache/bench/
 * for `--quick`, a two-minute smoke run whose figures are not for quoting).
 *
 * @module
 */

import { CORE_ROWS, runCore } from "./core.ts";
import { ParallelDirect, runBoundaries } from "./boundaries.ts";
import { runHttp } from "./http.ts";
import { KEPT_MARKER, renderMarkdown, type Run } from "./_report.ts";
import { median } from "./_stats.ts";
import { opensslVersion } from "./_openssl_speed.ts";
import { makeKeys } from "../test/_fixtures.ts";
import { WASM } from "../test/_wasm.ts";
import { toHex } from "../src/core/protocol.ts";
import { cpuModel, gitCommit, loadAverage } from "./_machine.ts";

/** Keep in step with bench/install_tools.sh. */
const VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.12.0";
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const quick = Deno.args.includes("--quick");
const outFlag = Deno.args.indexOf("--out");
const outDir = outFlag >= 0 ? Deno.args[outFlag + 1] : quick ? `${ROOT}/.cache/bench` : `${ROOT}/bench`;
const instances = Number(Deno.env.get("KEYCELL_SIGNER_INSTANCES") || navigator.hardwareConcurrency);

const settings = quick
  ? { coreRounds: 1, coreSeconds: 0.5, boundaryRounds: 1, boundarySeconds: 0.5, httpRounds: 1, httpSeconds: 2, fractions: [0.5] }
  : { coreRounds: 3, coreSeconds: 1, boundaryRounds: 3, boundarySeconds: 2, httpRounds: 3, httpSeconds: 5, fractions: [0.25, 0.5, 0.75] };
const connections = 32;
const concurrency = 16;
const coreRows = quick ? CORE_ROWS.filter((r) => ["RSA_2048", "ECC_NIST_P256"].includes(r.keySpec)) : CORE_ROWS;

const log = (line: string) => console.error(`bench: ${line}`);
const workDir = await Deno.makeTempDir({ prefix: "keycell-bench-" });
const loadBefore = loadAverage();

try {
  log(`crypto core (${coreRows.length} rows x ${settings.coreRounds} rounds)`);
  const core = await runCore({
    wasm: WASM,
    rows: coreRows,
    rounds: settings.coreRounds,
    seconds: settings.coreSeconds,
    workDir: `${workDir}/core`,
    node: "node",
    log,
  });

  const [p256] = await makeKeys(`${workDir}/p256`, ["ECC_NIST_P256"]);
  const keysDir = `${workDir}/p256/keys`;
  log("boundaries");
  const boundaries = await runBoundaries({
    wasm: WASM,
    keysDir,
    keyId: p256.id,
    instances,
    concurrency,
    rounds: settings.boundaryRounds,
    seconds: settings.boundarySeconds,
    log,
  });

  log("HTTP");
  const direct = await ParallelDirect.start(WASM, keysDir, p256.id, instances);
  const poolName = `worker, ${instances} instances`;
  const { results: http, reference } = await runHttp({
    keysDir,
    keyId: p256.id,
    configs: [
      { name: "inline", env: { KEYCELL_SIGNER: "inline" } },
      { name: "worker, 1 instance", env: { KEYCELL_SIGNER: "worker", KEYCELL_SIGNER_INSTANCES: "1" } },
      { name: poolName, env: { KEYCELL_SIGNER: "worker", KEYCELL_SIGNER_INSTANCES: String(instances) } },
      {
        name: `floor: Deno.serve and ${instances} signer workers, nothing else (bench/_floor_server.ts)`,
        env: { KEYCELL_SIGNER_INSTANCES: String(instances) },
        module: `${ROOT}/bench/_floor_server.ts`,
      },
    ],
    rounds: settings.httpRounds,
    seconds: settings.httpSeconds,
    connections,
    fractions: settings.fractions,
    reference: (seconds) => direct.run(seconds),
    wrk: "wrk",
    vegeta: `${ROOT}/.cache/bin/vegeta`,
    workDir,
    log,
  }).finally(() => direct.close());

  const pool = http.find((h) => h.config === poolName);
  // Paired by round: each HTTP round is compared with the reference measured just before it.
  const paired = pool?.saturation?.rounds.map((rate, round) => rate / reference[round]).filter(Number.isFinite) ?? [];
  const saturationRatio = paired.length ? median(paired) : undefined;
  const half = pool?.fixedRates.find((f) => f.fraction === 0.5);
  const directCpu = boundaries.find((b) => b.layer.startsWith("guest called directly (") )?.cpuPerSignatureUs;
  const cpuShare = directCpu && pool?.saturation ? directCpu / pool.saturation.serverCpuPerRequestUs : undefined;
  const run: Run = {
    date: new Date().toISOString(),
    command: `deno task bench${quick ? " --quick" : ""}`,
    quick,
    machine: {
      cpu: cpuModel(),
      cores: navigator.hardwareConcurrency,
      loadBefore,
      loadAfter: loadAverage(),
      kernel: Deno.osRelease(),
    },
    versions: {
      // The module measured, which may differ from the committed one in a working tree.
      "wasm/signer.wasm sha256": toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", WASM))),
      Deno: `${Deno.version.deno} (V8 ${Deno.version.v8})`,
      openssl: await opensslVersion(),
      node: await versionOf("node", ["--version"]),
      wrk: (await versionOf("wrk", ["-v"])).split(" Copyright")[0],
      // `go install` leaves vegeta's own version string empty; the installed module is pinned.
      vegeta: (await versionOf(`${ROOT}/.cache/bin/vegeta`, ["-version"])) === "not installed"
        ? "not installed"
        : VEGETA_MODULE,
    },
    commit: await gitCommit(ROOT),
    settings: { ...settings, instances, wrkConnections: connections, boundaryInFlight: concurrency },
    core,
    boundaries,
    http,
    httpReference: reference,
    targets: [
      {
        name: `HTTP P-256 sign, ${poolName}, saturation / guest called directly on the same cores (median of per-round ratios)`,
        value: saturationRatio === undefined ? "—" : `${(saturationRatio * 100).toFixed(0)}%`,
        goal: ">= 85%",
        met: saturationRatio === undefined ? undefined : saturationRatio >= 0.85,
      },
      {
        name: `HTTP P-256 sign, ${poolName}: guest CPU per signature / server CPU per request (the ceiling with the cores to itself)`,
        value: cpuShare === undefined ? "—" : `${(cpuShare * 100).toFixed(0)}%`,
        goal: ">= 85%",
        met: cpuShare === undefined ? undefined : cpuShare >= 0.85,
      },
      {
        name: `HTTP P-256 sign, ${poolName}, p99 at half of saturation`,
        value: half ? `${half.latency.p99.toFixed(2)} ms` : "—",
        goal: "< 5 ms",
        met: half ? half.latency.p99 < 5 : undefined,
      },
    ],
  };

  await Deno.mkdir(outDir, { recursive: true });
  let kept = "";
  try {
    const previous = await Deno.readTextFile(`${outDir}/RESULTS.md`);
    const at = previous.indexOf(KEPT_MARKER);
    if (at >= 0) kept = previous.slice(at + KEPT_MARKER.length);
  } catch {
    // first run in this directory
  }
  await Deno.writeTextFile(`${outDir}/RESULTS.md`, renderMarkdown(run, kept));
  await Deno.writeTextFile(`${outDir}/results.json`, JSON.stringify(run, null, 2) + "\n");
  log(`wrote ${outDir}/RESULTS.md and ${outDir}/results.json`);
} finally {
  await Deno.remove(workDir, { recursive: true });
}

async function versionOf(binary: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(binary, { args, stdout: "piped", stderr: "piped" }).output();
    return (new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr)).trim().split("\n")[0];
  } catch {
    return "not installed";
  }
}
