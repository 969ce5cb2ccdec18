/**
 * schemathesis (PyPI, at the version tools/schemathesis/requirements.txt pins) against a real
 * `keycell serve`: property-based requests to every operation of `/openapi.json`, with the admin
 * token, checking that no answer is a 5xx and that every answer is what the description says
 * (status, content type, headers, body schema), that bad input is refused, that a request without
 * the token is refused, and, in its stateful phase, sequences of calls (a key made, then used,
 * then deleted) that it infers from the description.
 *
 * The checks left out, and why, are in tools/schemathesis/schemathesis.toml.
 *
 * @module
 */

import { startServer } from "./_command.ts";
import { tempDir } from "./_temp.ts";

const ENV_SCRIPT = new URL("../scripts/schemathesis-env.sh", import.meta.url).pathname;
const CONFIG = new URL("../tools/schemathesis/schemathesis.toml", import.meta.url).pathname;

/** How a run goes. */
export interface SchemathesisOptions {
  /** Test cases per operation and phase. */
  maxExamples: number;
  /** Hypothesis's seed, for a run that can be repeated; random when absent. */
  seed?: number;
  /** Printed as the run goes (the deno task) or only returned (the test). */
  inherit?: boolean;
}

/** What a run found. */
export interface SchemathesisResult {
  code: number;
  output: string;
}

/**
 * The schemathesis command, made ready by scripts/schemathesis-env.sh (a virtualenv installed on
 * first use).
 *
 * @example
 * ```ts
 * import { schemathesisCommand } from "./_schemathesis.ts";
 *
 * console.log(await schemathesisCommand()); // .../tools/schemathesis/.venv/bin/schemathesis
 * ```
 */
export async function schemathesisCommand(): Promise<string> {
  const out = await new Deno.Command("bash", { args: [ENV_SCRIPT, "path"], stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`no schemathesis: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim();
}

/**
 * Starts `keycell serve` in a new data directory, runs schemathesis against it, stops it.
 *
 * @example
 * ```ts
 * import { runSchemathesis } from "./_schemathesis.ts";
 *
 * const { code, output } = await runSchemathesis({ maxExamples: 5, seed: 1 });
 * if (code !== 0) throw new Error(output);
 * ```
 */
export async function runSchemathesis(options: SchemathesisOptions): Promise<SchemathesisResult> {
  const command = await schemathesisCommand();
  const dataDir = await tempDir("keycell-schemathesis-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "worker" } });
  try {
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    const work = await tempDir("keycell-schemathesis-run-");
    const child = new Deno.Command(command, {
      args: [
        "--no-color",
        "--config-file",
        CONFIG,
        "run",
        `${server.url}/openapi.json`,
        "--header",
        `Authorization: Bearer ${token}`,
        "--max-examples",
        String(options.maxExamples),
        ...(options.seed === undefined ? [] : ["--seed", String(options.seed)]),
        // An RSA-4096 key takes seconds to generate, more on a busy machine.
        "--request-timeout",
        "120",
        // One request at a time: a readiness probe sent while every guest generates an RSA key
        // rightly answers 503, which is no bug but fails not_a_server_error.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--suppress-health-check",
        "too_slow",
      ],
      cwd: work,
      env: { SCHEMATHESIS_TELEMETRY: "false" },
      stdin: "null",
      stdout: options.inherit ? "inherit" : "piped",
      stderr: options.inherit ? "inherit" : "piped",
    });
    const out = await child.output();
    const decode = (bytes: Uint8Array | null) => bytes === null ? "" : new TextDecoder().decode(bytes);
    return { code: out.code, output: options.inherit ? "" : decode(out.stdout) + decode(out.stderr) };
  } finally {
    await server.stop();
  }
}
