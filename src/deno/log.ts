/**
 * The operational log of keycell's Deno commands: KEYCELL_LOG_LEVEL and KEYCELL_LOG_FORMAT
 * (src/core/log.ts) applied to standard output (debug, info) and standard error (warning, error),
 * written at once, so a line printed before `Deno.exit` is not lost.
 *
 * @module
 */

import { configureSync } from "@logtape/logtape";
import { type LogFormat, logConfig, type OpsLogLevel } from "../core/log.ts";

/**
 * Sends keycell's log records at `level` and above to standard output and error as `format`
 * lines, replacing any configuration before.
 *
 * @example
 * ```ts
 * import { configureLogging } from "./log.ts";
 * import { getLog } from "../core/log.ts";
 *
 * configureLogging({ level: "info", format: "json" });
 * getLog().info("reloaded the tokens", { tokens: 2 }); // {"time":"...","level":"info","category":"keycell",...}
 * ```
 */
export function configureLogging(options: { level: OpsLogLevel; format: LogFormat }): void {
  configureSync(logConfig(options.level, options.format, (line, toError) => (toError ? console.error : console.log)(line)));
}
