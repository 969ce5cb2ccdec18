/**
 * The operational log of keycell's Workers: the `LOG_LEVEL` and `LOG_FORMAT` bindings
 * (KEYCELL_LOG_LEVEL and KEYCELL_LOG_FORMAT of src/core/log.ts; unset or unknown values read as
 * `info` and `text`) applied once per isolate, to the console the platform collects.
 *
 * @module
 */

import { configureSync } from "@logtape/logtape";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, logConfig, type OpsLogLevel } from "../core/log.ts";

/** The bindings that set the log. */
export interface LogEnv {
  /** `debug`, `info` (the default), `warning` or `error`. */
  LOG_LEVEL?: string;
  /** `text` (the default) or `json`. */
  LOG_FORMAT?: string;
}

let configured = false;

/**
 * Configures the log from the bindings on the first call in an isolate (bindings arrive with
 * requests); later calls do nothing.
 *
 * @example
 * ```ts
 * import { configureWorkerLogging } from "./log.ts";
 *
 * configureWorkerLogging({ LOG_FORMAT: "json" });
 * ```
 */
export function configureWorkerLogging(env: LogEnv): void {
  if (configured) return;
  configured = true;
  const level = (LOG_LEVELS as readonly string[]).includes(env.LOG_LEVEL ?? "") ? env.LOG_LEVEL as OpsLogLevel : "info";
  const format = (LOG_FORMATS as readonly string[]).includes(env.LOG_FORMAT ?? "") ? env.LOG_FORMAT as LogFormat : "text";
  configureSync(logConfig(level, format, (line, toError) => (toError ? console.error : console.log)(line)));
}
