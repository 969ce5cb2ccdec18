/**
 * Fuzzing per interface, the three side by side:
 * - Keyless frames: the fuzzer of `deno task fuzz:keyless` (src/keyless/fuzz.ts) against a
 *   `keycell keyserver` process on TCP, so that a crash is the process gone and a hang is a case
 *   the fuzzer saw go unanswered. Most cases open a connection of their own, so a server that kept
 *   something of each would grow without bound: the run goes in two halves, and the key server's
 *   resident memory may grow by {@linkcode KEYLESS_SECOND_HALF_GROWTH_MIB} at most in the second
 *   (the first takes it to its working size);
 * - HTTP: the fuzzer of `deno task fuzz:http` (test/_http_fuzz.ts) against a `keycell serve` of its
 *   own, 8 cases at once, a client signing beside it;
 * - guest ABI: the coverage-guided fuzzer of `deno task fuzz:guest` (rust-signer/fuzz), every
 *   export but `kc_trap`, natively with libFuzzer.
 *
 * @module
 */

import { assertEquals } from "../_assert.ts";
import { buildGuestFuzzer, type GuestFuzzReport, runGuestFuzzer, unknownGuestAnswers } from "../_guest_fuzz.ts";
import { fuzzServe, type HttpFuzzReport } from "../_http_fuzz.ts";
import { tempDir } from "../_temp.ts";
import { KeylessClient } from "../../src/keyless/client.ts";
import { fuzzKeyless } from "../../src/keyless/fuzz.ts";
import { Opcode } from "../../src/keyless/codec.ts";
import { rssKib, size } from "./_measure.ts";
import { keyserverWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

/**
 * How much the key server's resident memory may grow over the second half of the Keyless fuzz:
 * 55 KiB kept per connection once made a short run's second half grow 172 MiB, where a sound one
 * grows about 32 MiB (a full run's, a few MiB).
 */
const KEYLESS_SECOND_HALF_GROWTH_MIB = 96;

/** One interface's run: what the row says of it, and whether it held. */
interface Outcome {
  figure: string;
  ok: boolean;
  /** What went wrong, for the assertion; empty when it held. */
  failure: string;
}

/** Runs the scenario and records its row. */
export async function fuzzing(): Promise<void> {
  const cases = size({ keyless: 10_000, http: 1_000, guest: 5_000 }, { keyless: 1_000_000, http: 1_000_000, guest: 1_000_000 });
  const seed = Number(Deno.env.get("KEYCELL_FUZZ_SEED") ?? Date.now() % 1_000_000);
  const outcomes = await Promise.all([keylessFrames(cases.keyless, seed), http(cases.http, seed), guestAbi(cases.guest, seed)]);
  const failed = outcomes.filter((o) => !o.ok);
  await recordRow({
    row: "fuzz",
    verdict: failed.length === 0 ? "pass" : "fail",
    figures: outcomes.map((o) => o.figure),
    note: failed.length === 0 ? undefined : failed.map((o) => o.failure).join("; "),
  });
  assertEquals(failed.map((o) => o.failure), [], `seed ${seed}`);
}

async function keylessFrames(iterations: number, seed: number): Promise<Outcome> {
  const ks = await keyserverWithKey();
  let outcome = "";
  let report: Awaited<ReturnType<typeof fuzzKeyless>> | undefined;
  const started = performance.now();
  const rss = () => rssKib(ks.keyserver.pid) / 1024;
  const rssBefore = rss();
  let rssHalf = NaN;
  let rssPeak = rssBefore;
  const sampler = setInterval(() => rssPeak = Math.max(rssPeak, rss()), 1_000);
  const address = { transport: "tcp" as const, hostname: "127.0.0.1", port: Number(ks.keyserver.ready[1]) };
  try {
    // The halves are two runs, seeds `seed` and `seed + 1`: a failure names the one to replay.
    const first = await fuzzKeyless(address, { iterations: Math.ceil(iterations / 2), seed, skis: [ks.ski] });
    rssHalf = rss();
    const second = await fuzzKeyless(address, { iterations: Math.floor(iterations / 2), seed: seed + 1, skis: [ks.ski] });
    report = {
      cases: first.cases + second.cases,
      framed: first.framed + second.framed,
      closedByServer: first.closedByServer + second.closedByServer,
      survived: first.survived + second.survived,
    };
  } catch (err) {
    outcome = (err as Error).message;
  } finally {
    clearInterval(sampler);
  }
  const seconds = (performance.now() - started) / 1000;
  const rssAfter = rss();
  rssPeak = Math.max(rssPeak, rssAfter);
  // A crash: the process is gone, or no longer answers a ping on a new connection.
  let alive = false;
  try {
    const client = new KeylessClient(await ks.connect());
    alive = (await client.request({ opcode: Opcode.PING }, 5_000)).kind === "pong";
    client.close();
  } catch {
    alive = false;
  }
  const code = await ks.keyserver.stop();
  const crashes = alive && code === 0 ? 0 : 1;
  const hangs = outcome.includes("no answer") || outcome.includes("neither answered nor closed") ? 1 : 0;
  const grew = rssAfter - rssHalf > KEYLESS_SECOND_HALF_GROWTH_MIB;
  const failure = outcome !== ""
    ? `Keyless: ${outcome}`
    : crashes
    ? `Keyless: the key server ${alive ? `exited ${code}` : "no longer answers"}`
    : grew
    ? `Keyless: the key server's resident memory grew ${(rssAfter - rssHalf).toFixed(0)} MiB over the second half of the run (at most ${KEYLESS_SECOND_HALF_GROWTH_MIB})`
    : "";
  return {
    figure: `Keyless frames (src/keyless/fuzz.ts against keycell keyserver on TCP, two halves, seeds ${seed} and ${seed + 1}): ${report?.cases ?? "?"} of ${iterations} cases in ${seconds.toFixed(0)} s; ` +
      `crashes ${crashes}, hangs ${hangs}; ${report ? `${report.framed} well-framed requests each answered by id (a response or a typed error), ${report.closedByServer} connections with unframeable bytes closed by the server, ${report.survived} answered a ping after junk` : outcome}; ` +
      `the key server's RSS ${rssBefore.toFixed(0)} MiB before, ${rssHalf.toFixed(0)} MiB at half-way, ${rssAfter.toFixed(0)} MiB after, at most ${rssPeak.toFixed(0)} MiB ` +
      `(the second half may add ${KEYLESS_SECOND_HALF_GROWTH_MIB} MiB)`,
    ok: failure === "" && report?.cases === iterations,
    failure,
  };
}

async function http(iterations: number, seed: number): Promise<Outcome> {
  const started = performance.now();
  let report: HttpFuzzReport | undefined;
  let failure = "";
  try {
    report = await fuzzServe({ iterations, seed, concurrency: 8 });
  } catch (err) {
    failure = `HTTP: ${(err as Error).message}`;
  }
  const seconds = (performance.now() - started) / 1000;
  const answers = report ? Object.entries(report.answers).sort((a, b) => b[1] - a[1]).map(([a, n]) => `${a}: ${n}`).join(", ") : "";
  const serverErrors = report ? Object.entries(report.answers).filter(([a]) => a.startsWith("5")).reduce((n, [, k]) => n + k, 0) : 0;
  return {
    figure: `HTTP (test/_http_fuzz.ts against keycell serve, 8 cases at once, seed ${seed}): ${report?.cases ?? "?"} of ${iterations} cases in ${seconds.toFixed(0)} s; ` +
      (report
        ? `crashes 0 (serve answered /readyz after and exited 0 on SIGTERM), hangs 0 (each case answered or closed within 10 s), 5xx ${serverErrors}; ` +
          `answers: ${answers}; refused by Deno's HTTP server before keycell: ${Object.values(report.refusedByHttpServer).reduce((a, b) => a + b, 0)}; ` +
          `closed without an answer (requests never completed): ${report.closedWithoutAnswer}; a client signing beside it: ${report.wellBehavedSigns} signatures, all 200`
        : failure),
    ok: failure === "" && report?.cases === iterations && serverErrors === 0,
    failure: failure || (serverErrors ? `HTTP: ${serverErrors} answers were 5xx` : ""),
  };
}

async function guestAbi(runs: number, seed: number): Promise<Outcome> {
  await buildGuestFuzzer();
  const dir = await tempDir("keycell-fuzz-guest-");
  let report: GuestFuzzReport;
  try {
    // libFuzzer's -max_total_time bounds the run; a million inputs take minutes.
    report = await runGuestFuzzer({ runs, maxSeconds: 3_600, seed, corpus: `${dir}/corpus`, artifacts: `${dir}/artifacts` });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const unknown = unknownGuestAnswers(report.answers);
  const byExport = new Map<string, number>();
  for (const [answer, n] of Object.entries(report.answers)) {
    const name = answer.split(":")[0];
    byExport.set(name, (byExport.get(name) ?? 0) + n);
  }
  const failure = report.crashes || report.hangs || report.exitCode !== 0
    ? `guest ABI: ${report.crashes} crashes, ${report.hangs} hangs, exit ${report.exitCode}${report.panic ? `: ${report.panic}` : ""}`
    : unknown.length > 0
    ? `guest ABI: answers that are neither a length nor a status: ${unknown.join(", ")}`
    : "";
  const ok = failure === "" && report.runs === runs;
  return {
    figure: `guest ABI (rust-signer/fuzz, libFuzzer, coverage-guided, seed ${seed}): ${report.runs} of ${runs} inputs in ${report.seconds.toFixed(0)} s; ` +
      `crashes ${report.crashes}, hangs ${report.hangs}; ${report.edges} edges covered, corpus ${report.corpus}; ` +
      `every answer a length or a status of ABI.md (${unknown.length} others); calls by export: ${[...byExport].sort().map(([e, n]) => `${e} ${n}`).join(", ")}; ` +
      `signatures made: ${report.answers["kc_sign:ok"] ?? 0}`,
    ok,
    failure: failure || (report.runs !== runs ? `guest ABI: ${report.runs} of ${runs} inputs ran` : ""),
  };
}
