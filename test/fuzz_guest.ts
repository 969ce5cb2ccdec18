/**
 * `deno task fuzz:guest [runs] [max seconds] [seed]`: the guest fuzzer at length (default 10^6
 * inputs, at most an hour), with a fresh corpus. Prints libFuzzer's progress and a JSON report;
 * exits 1 on a crash or hang, whose input is kept in reports/fuzz-guest/ to replay with
 * `rust-signer/target/fuzz/x86_64-unknown-linux-gnu/release/guest <file>`.
 *
 * @module
 */

import { buildGuestFuzzer, runGuestFuzzer } from "./_guest_fuzz.ts";
import { tempDir } from "./_temp.ts";

const runs = Number(Deno.args[0] ?? 1_000_000);
const maxSeconds = Number(Deno.args[1] ?? 3600);
const seed = Number(Deno.args[2] ?? Date.now() % 1_000_000);
await buildGuestFuzzer();
const dir = await tempDir("keycell-fuzz-guest-");
const artifacts = new URL("../reports/fuzz-guest", import.meta.url).pathname;
console.log(`fuzz:guest: ${runs} runs, at most ${maxSeconds} s, seed ${seed}`);
try {
  const report = await runGuestFuzzer({ runs, maxSeconds, seed, corpus: `${dir}/corpus`, artifacts, echo: true });
  const { tail: _tail, ...summary } = report;
  console.log("fuzz:guest:", JSON.stringify(summary));
  if (report.crashes || report.hangs || report.exitCode !== 0) {
    console.error(report.tail);
    Deno.exit(1);
  }
  await Deno.remove(artifacts).catch(() => undefined);
} finally {
  await Deno.remove(dir, { recursive: true });
}
