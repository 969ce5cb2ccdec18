/**
 * keycell's operational log (src/core/log.ts) caught for a test: the lines a piece of work logs,
 * as they would be written, instead of on the console.
 *
 * @module
 */

import { configureSync, resetSync } from "@logtape/logtape";
import { type LogFormat, logConfig, type OpsLogLevel } from "../src/core/log.ts";

/** One line the work logged. */
export interface CaughtLine {
  line: string;
  /** Whether it would have gone to standard error. */
  toError: boolean;
}

/**
 * Runs `work` with keycell's log sent to a list, at `level` and in `format` (default `debug`,
 * `text`); resolves with the lines. The log is left unconfigured afterwards, as it is in tests.
 *
 * @example
 * ```ts
 * import { catchLog } from "./_log.ts";
 * import { getLog } from "../src/core/log.ts";
 *
 * const lines = await catchLog(() => getLog().warn("careful"));
 * lines[0].line; // "keycell: careful"
 * ```
 */
export async function catchLog(
  work: () => unknown,
  options: { level?: OpsLogLevel; format?: LogFormat } = {},
): Promise<CaughtLine[]> {
  const caught: CaughtLine[] = [];
  configureSync(logConfig(options.level ?? "debug", options.format ?? "text", (line, toError) => caught.push({ line, toError })));
  try {
    await work();
  } finally {
    resetSync();
  }
  return caught;
}
