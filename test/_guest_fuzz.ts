/**
 * Builds and runs the guest's coverage-guided fuzzer (rust-signer/fuzz): the guest's Rust, its C
 * and BoringSSL compiled natively with libFuzzer's coverage counters on stable Rust, one libFuzzer
 * run over every export with a master key loaded. Used by `deno task fuzz:guest` and by
 * `fuzz_guest_test.ts`.
 *
 * @module
 */

import { makeKeys, pkcs8Of } from "./_fixtures.ts";
import { tempDir } from "./_temp.ts";
import { STATUSES } from "../src/core/protocol.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const FUZZ_DIR = `${ROOT}rust-signer/fuzz`;
const TARGET = "x86_64-unknown-linux-gnu";
/** Beside the guest's own cargo output, which git ignores. */
const TARGET_DIR = `${ROOT}rust-signer/target/fuzz`;

/** The path of the built fuzzer. */
export const GUEST_FUZZER = `${TARGET_DIR}/${TARGET}/release/guest`;

// Stable rustc's SanitizerCoverage pass with the counters, PC table and comparison tracing that
// cargo-fuzz asks for (it needs nightly only for -Zsanitizer, which this target does without).
const RUSTFLAGS = [
  "-Cpasses=sancov-module",
  "-Cllvm-args=-sanitizer-coverage-level=4",
  "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
  "-Cllvm-args=-sanitizer-coverage-pc-table",
  "-Cllvm-args=-sanitizer-coverage-trace-compares",
  "--cfg",
  "fuzzing",
].join(" ");

/**
 * Builds the fuzzer with the host's cargo (the first build compiles BoringSSL, a few minutes; later
 * ones reuse its objects under .cache/boringssl).
 *
 * @example
 * ```ts
 * import { buildGuestFuzzer } from "./_guest_fuzz.ts";
 *
 * await buildGuestFuzzer();
 * ```
 */
export async function buildGuestFuzzer(): Promise<void> {
  // --target keeps RUSTFLAGS off build scripts, which must not be instrumented.
  const out = await new Deno.Command("cargo", {
    args: ["build", "--locked", "--quiet", "--release", "--target", TARGET],
    cwd: FUZZ_DIR,
    env: { CARGO_TARGET_DIR: TARGET_DIR, RUSTFLAGS },
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`building rust-signer/fuzz failed:\n${new TextDecoder().decode(out.stderr)}`);
}

/**
 * Seeds the fuzzer cannot make itself: private keys for `kc_load` (op 0) in each form the guest
 * reads (PKCS#8 PEM and DER, SEC1 PEM), from the openssl CLI. The fuzzer adds valid requests for
 * every other export when it starts.
 *
 * @example
 * ```ts
 * import { writeLoadSeeds } from "./_guest_fuzz.ts";
 * import { tempDir } from "./_temp.ts";
 *
 * await writeLoadSeeds(await tempDir());
 * ```
 */
export async function writeLoadSeeds(corpus: string): Promise<void> {
  const keysRoot = await tempDir("keycell-fuzz-keys-");
  try {
    await Deno.mkdir(corpus, { recursive: true });
    const keys = await makeKeys(keysRoot, ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"]);
    const withOp = (bytes: Uint8Array) => new Uint8Array([0, ...bytes]);
    for (const key of keys) {
      const pem = await Deno.readFile(key.path);
      await Deno.writeFile(`${corpus}/load-pem-${key.keySpec}`, withOp(pem));
      await Deno.writeFile(`${corpus}/load-der-${key.keySpec}`, withOp(await pkcs8Of(key.path)));
    }
  } finally {
    await Deno.remove(keysRoot, { recursive: true });
  }
}

/** What a fuzzer run did, from libFuzzer's output. */
export interface GuestFuzzReport {
  /** Inputs executed. */
  runs: number;
  seconds: number;
  /** Edges covered (libFuzzer's `cov`). */
  edges: number;
  /** Inputs kept in the corpus. */
  corpus: number;
  /** Inputs that panicked, aborted or trapped (libFuzzer stops at the first). */
  crashes: number;
  /** Inputs that ran past the per-input timeout. */
  hangs: number;
  /** Answers per export and status (`kc_sign:ok`, `kc_sign:-2`), from the harness. */
  answers: Record<string, number>;
  /** The panic's message, if an input panicked. */
  panic?: string;
  /** Files libFuzzer wrote for a crash or a hang. */
  artifacts: string[];
  exitCode: number;
  /** The last lines of libFuzzer's output, for a failure message. */
  tail: string;
}

/** Options for {@linkcode runGuestFuzzer}. */
export interface GuestFuzzOptions {
  runs: number;
  /** libFuzzer's -max_total_time: a bound on the run whatever `runs` says. */
  maxSeconds: number;
  /** libFuzzer's -seed, for a replayable run. */
  seed?: number;
  /** Corpus directory; seeds are written into it before the run. */
  corpus: string;
  /** Where crash and timeout inputs go. */
  artifacts: string;
  /** Enables the planted crash (the positive control). */
  plantedCrash?: boolean;
  /** Tokens for libFuzzer's dictionary (-dict). */
  dictionary?: string[];
  /** Prints libFuzzer's status lines as they come. */
  echo?: boolean;
}

/**
 * Runs the built fuzzer and reads its report. A crash or hang is reported, not thrown.
 *
 * @example
 * ```ts
 * import { runGuestFuzzer } from "./_guest_fuzz.ts";
 *
 * async function run(dir: string) {
 *   return await runGuestFuzzer({ runs: 1000, maxSeconds: 60, corpus: `${dir}/corpus`, artifacts: `${dir}/artifacts` });
 * }
 * ```
 */
export async function runGuestFuzzer(options: GuestFuzzOptions): Promise<GuestFuzzReport> {
  await writeLoadSeeds(options.corpus);
  await Deno.mkdir(options.artifacts, { recursive: true });
  const dict = options.dictionary ? [`-dict=${options.corpus}.dict`] : [];
  if (options.dictionary) await Deno.writeTextFile(`${options.corpus}.dict`, options.dictionary.map((t) => JSON.stringify(t)).join("\n") + "\n");
  const started = performance.now();
  const child = new Deno.Command(GUEST_FUZZER, {
    args: [
      `-runs=${options.runs}`,
      `-max_total_time=${options.maxSeconds}`,
      `-seed=${options.seed ?? 0}`,
      // An input that runs 10 s is a hang: the slowest valid request (an RSA-4096 unwrap) takes ms.
      "-timeout=10",
      "-rss_limit_mb=2048",
      "-print_final_stats=1",
      `-artifact_prefix=${options.artifacts}/`,
      ...dict,
      options.corpus,
    ],
    env: { KEYCELL_FUZZ_SEEDS: options.corpus, ...(options.plantedCrash ? { KEYCELL_FUZZ_PLANTED_CRASH: "1" } : {}), RUST_BACKTRACE: "0" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const keep = (line: string) => {
    if (line === "") return;
    // Keep the tail and the lines the report is read from, not every NEW/REDUCE.
    lines.push(line);
    if (lines.length > 400) lines.splice(0, 200);
    if (options.echo && /pulse|INITED|DONE|Done|ERROR|keycell-fuzz/.test(line)) console.log(line);
  };
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      parts.forEach(keep);
    }
    keep(rest);
  };
  const [status] = await Promise.all([child.status, collect(child.stdout), collect(child.stderr)]);
  const text = lines.join("\n");
  const last = (re: RegExp) => [...text.matchAll(new RegExp(re.source, "g"))].at(-1)?.[1];
  const answers: Record<string, number> = {};
  for (const item of (last(/keycell-fuzz answers: (.*)/) ?? "").split(" ").filter(Boolean)) {
    const [name, n] = item.split("=");
    answers[name] = Number(n);
  }
  const artifacts = [];
  for await (const entry of Deno.readDir(options.artifacts)) artifacts.push(`${options.artifacts}/${entry.name}`);
  const hangs = /ERROR: libFuzzer: timeout/.test(text) ? 1 : 0;
  const crashes = !hangs && /ERROR: libFuzzer: (deadly signal|crash|out-of-memory)|panicked at/.test(text) ? 1 : 0;
  return {
    runs: Number(last(/stat::number_of_executed_units: (\d+)/) ?? last(/Done (\d+) runs/) ?? 0),
    seconds: (performance.now() - started) / 1000,
    edges: Number(last(/cov: (\d+)/) ?? 0),
    corpus: Number(last(/corp: (\d+)/) ?? 0),
    crashes,
    hangs,
    // libFuzzer prints the crashing input byte by byte after it, so it may be far from the tail.
    panic: lines.some((l) => / panicked at /.test(l)) ? lines[lines.findIndex((l) => / panicked at /.test(l)) + 1] : undefined,
    answers,
    artifacts,
    exitCode: status.code,
    tail: lines.slice(-40).join("\n"),
  };
}

/** The guest's own answers: a length (`ok`) or one of its statuses negated (ABI.md). */
const GUEST_ANSWERS = new Set(["ok", ...Object.values(STATUSES).filter((s) => s.value < 32).map((s) => String(-s.value))]);

/**
 * The answers of a report that are neither a length nor a status of the guest's (`kc_sign:-99`):
 * none in a sound run.
 *
 * @example
 * ```ts
 * import { unknownGuestAnswers } from "./_guest_fuzz.ts";
 *
 * unknownGuestAnswers({ "kc_sign:ok": 3, "kc_sign:-2": 1 }); // []
 * ```
 */
export function unknownGuestAnswers(answers: Record<string, number>): string[] {
  return Object.keys(answers).filter((answer) => !GUEST_ANSWERS.has(answer.split(":")[1]));
}
