/**
 * keycell's operational log: what the server tells its operator (ready, started, a key file
 * skipped, an unexpected error), at a level, under a category below `keycell`. Every layer logs
 * through {@linkcode getLog}; only a platform layer (src/deno, src/workerd, src/deploy) decides
 * where the lines go, with {@linkcode logConfig} and LogTape's `configureSync`. Until it has,
 * records are dropped. The audit log is a separate record of requests, not part of this.
 *
 * A record never carries a secret, a token or a request body: messages name keys by their id and
 * files by their path. An unexpected error's stack is written only at the error level.
 *
 * LogTape's loggers touch no platform API (only its own formatters, which this module does not
 * use, look for the runtime's inspect function), so the core may log through it.
 *
 * @module
 */

import { type Config, getLogger, type LogLevel, type LogRecord, type Sink } from "@logtape/logtape";

/** The levels an operator chooses from (KEYCELL_LOG_LEVEL), most verbose first. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const satisfies readonly LogLevel[];
/** One of {@linkcode LOG_LEVELS}. */
export type OpsLogLevel = typeof LOG_LEVELS[number];

/**
 * How a record is written (KEYCELL_LOG_FORMAT): `text`, the human line keycell has always
 * printed (`keycell: ...`, `keycell keyserver: ...`); `json`, one JSON object per line.
 */
export const LOG_FORMATS = ["text", "json"] as const;
/** One of {@linkcode LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

/** Structured values of a record; `error` may hold an Error, whose stack is kept at the error level only. */
export type LogFields = Record<string, unknown>;

/** Where a layer logs: a message for people, and fields for machines. */
export interface Log {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** The root of every category keycell logs under. */
export const LOG_CATEGORY = "keycell";

/**
 * The log of `keycell` or of a part of it (`getLog("keyserver")` is `keycell keyserver`).
 *
 * @example
 * ```ts
 * import { getLog } from "./log.ts";
 *
 * getLog("keyserver").info("reloaded the tokens", { tokens: 3 });
 * ```
 */
export function getLog(...category: string[]): Log {
  const logger = getLogger([LOG_CATEGORY, ...category]);
  // `emit` takes the message as it is: LogTape's templates would read `{...}` in an error message as a placeholder.
  const at = (level: LogLevel) => (message: string, fields: LogFields = {}) =>
    logger.emit({ level, message: [message], rawMessage: message, timestamp: Date.now(), properties: fields });
  return { debug: at("debug"), info: at("info"), warn: at("warning"), error: at("error") };
}

/**
 * Whether a record is for standard error: warnings and errors are; the rest goes to standard
 * output, as keycell's notices always have.
 */
export function isErrorLevel(level: LogLevel): boolean {
  return level === "warning" || level === "error" || level === "fatal";
}

/** The one message that does not read `<category>: <message>`: scripts wait for `keycell ready on ...`. */
const READY = "ready on ";

/**
 * One record as one line (without its newline) in `format`.
 *
 * @example
 * ```ts
 * import { formatLogRecord } from "./log.ts";
 *
 * const record = {
 *   category: ["keycell", "keyserver"], level: "info" as const, message: ["skipped old.pem"],
 *   rawMessage: "skipped old.pem", timestamp: 0, properties: { file: "old.pem" },
 * };
 * formatLogRecord(record, "text"); // "keycell keyserver: skipped old.pem"
 * formatLogRecord(record, "json"); // {"time":"1970-01-01T00:00:00.000Z","level":"info","category":"keycell.keyserver",...}
 * ```
 */
export function formatLogRecord(record: LogRecord, format: LogFormat): string {
  const message = record.message.map(String).join("");
  const { error, ...rest } = record.properties;
  const stack = record.level === "error" || record.level === "fatal";
  if (format === "text") {
    const lead = record.category.join(" ");
    const line = `${lead}${message.startsWith(READY) ? " " : ": "}${message}`;
    if (error === undefined) return line;
    return `${line}: ${error instanceof Error ? (stack && error.stack) || `${error.name}: ${error.message}` : String(error)}`;
  }
  const fields: LogFields = rest;
  if (error !== undefined) {
    fields.error = error instanceof Error
      ? { name: error.name, message: error.message, ...(stack && error.stack ? { stack: error.stack } : {}) }
      : String(error);
  }
  return JSON.stringify({
    time: new Date(record.timestamp).toISOString(),
    level: record.level,
    category: record.category.join("."),
    message,
    fields,
  }, (_key, value) => typeof value === "bigint" ? String(value) : value);
}

/**
 * A `json` line read back as the record it was (its `error` an Error again), or undefined for any
 * other line: how a process passes on the records of a child it started.
 *
 * @example
 * ```ts
 * import { formatLogRecord, parseLogLine } from "./log.ts";
 *
 * const record = parseLogLine('{"time":"1970-01-01T00:00:00.000Z","level":"info","category":"keycell","message":"hi","fields":{}}');
 * formatLogRecord(record!, "text"); // "keycell: hi"
 * ```
 */
export function parseLogLine(line: string): LogRecord | undefined {
  if (!line.startsWith("{")) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return undefined;
  }
  const { time, level, category, message, fields } = json as Record<string, unknown>;
  if (
    typeof time !== "string" || typeof level !== "string" || !LEVELS.has(level) || typeof category !== "string" ||
    typeof message !== "string" || typeof fields !== "object" || fields === null
  ) return undefined;
  const properties: LogFields = { ...fields };
  const error = properties.error as { name?: unknown; message?: unknown; stack?: unknown } | undefined;
  if (typeof error === "object" && error !== null && typeof error.message === "string") {
    properties.error = Object.assign(new Error(error.message), {
      name: String(error.name ?? "Error"),
      stack: typeof error.stack === "string" ? error.stack : undefined,
    });
  }
  return {
    category: category.split("."),
    level: level as LogLevel,
    message: [message],
    rawMessage: message,
    timestamp: Date.parse(time),
    properties,
  };
}

const LEVELS = new Set<string>(["trace", "debug", "info", "warning", "error", "fatal"]);

/**
 * Logs a record made elsewhere (by {@linkcode parseLogLine}) as if it were made here, under its
 * own category, level and time.
 *
 * @example
 * ```ts
 * import { parseLogLine, relayLogRecord } from "./log.ts";
 *
 * const record = parseLogLine('{"time":"1970-01-01T00:00:00.000Z","level":"info","category":"keycell.keyserver","message":"hi","fields":{}}');
 * if (record) relayLogRecord(record);
 * ```
 */
export function relayLogRecord(record: LogRecord): void {
  getLogger(record.category).emit(record);
}

/**
 * The LogTape configuration of a platform: records of `keycell` (and LogTape's own diagnostics)
 * at `level` and above, formatted as `format` and handed to `write`.
 *
 * @example
 * ```ts
 * import { configureSync } from "@logtape/logtape";
 * import { getLog, logConfig } from "./log.ts";
 *
 * configureSync(logConfig("info", "text", (line, toError) => toError ? console.error(line) : console.log(line)));
 * getLog().info("ready on http://127.0.0.1:8787"); // keycell ready on http://127.0.0.1:8787
 * ```
 */
export function logConfig(
  level: OpsLogLevel,
  format: LogFormat,
  write: (line: string, toError: boolean) => void,
): Config<string, string> {
  const sink: Sink = (record) => write(formatLogRecord(record, format), isErrorLevel(record.level));
  return {
    reset: true,
    sinks: { keycell: sink },
    loggers: [
      { category: [LOG_CATEGORY], lowestLevel: level, sinks: ["keycell"] },
      // LogTape's diagnostics (a sink that failed), and no greeting on every start.
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["keycell"] },
    ],
  };
}
