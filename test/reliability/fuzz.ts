/**
 * Fuzzing per interface. Keyless frames: the fuzzer of `deno task fuzz:keyless`
 * (src/keyless/fuzz.ts) against a `keycell keyserver` process on TCP, so that a crash is the
 * process gone and a hang is a case the fuzzer saw go unanswered. The HTTP and guest ABI fuzzers
 * are not measured here yet.
 *
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { KeylessClient } from "../../src/keyless/client.ts";
import { fuzzKeyless } from "../../src/keyless/fuzz.ts";
import { Opcode } from "../../src/keyless/codec.ts";
import { size } from "./_measure.ts";
import { keyserverWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

/** Runs the scenario and records its row. */
export async function fuzzing(): Promise<void> {
  const iterations = size(5_000, 1_000_000);
  const seed = Number(Deno.env.get("KEYCELL_FUZZ_SEED") ?? Date.now() % 1_000_000);
  const ks = await keyserverWithKey();
  let outcome = "";
  let report: Awaited<ReturnType<typeof fuzzKeyless>> | undefined;
  const started = performance.now();
  try {
    report = await fuzzKeyless({ transport: "tcp", hostname: "127.0.0.1", port: Number(ks.keyserver.ready[1]) }, { iterations, seed, skis: [ks.ski] });
  } catch (err) {
    outcome = (err as Error).message;
  }
  const seconds = (performance.now() - started) / 1000;
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
  const figures = [
    `Keyless frames (src/keyless/fuzz.ts against keycell keyserver on TCP, seed ${seed}): ${report?.cases ?? "?"} of ${iterations} cases in ${seconds.toFixed(0)} s; ` +
      `crashes ${crashes}, hangs ${hangs}; ${report ? `${report.framed} well-framed requests each answered by id (a response or a typed error), ${report.closedByServer} connections with unframeable bytes closed by the server, ${report.survived} answered a ping after junk` : outcome}`,
    "HTTP: not run by this row; `deno task fuzz:http` runs it (README, \"Fuzzing\"), 2,000 cases of it in every test run",
    "guest ABI: not run by this row; `deno task fuzz:guest` runs it (README, \"Fuzzing\"), 20,000 inputs of it in every test run",
  ];
  const ok = report !== undefined && report.cases === iterations && crashes === 0;
  await recordRow({ row: "fuzz", verdict: ok ? "pass" : "fail", figures, note: "only the Keyless frames are fuzzed here so far" });
  assertEquals(outcome, "", `seed ${seed}: ${outcome}`);
  assert(alive, "the key server answers after the fuzz");
  assertEquals(code, 0, "the key server stops cleanly");
  assertEquals(report?.cases, iterations);
}
