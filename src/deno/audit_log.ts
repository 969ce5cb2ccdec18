/**
 * The audit log file: one JSON line per record, appended in the background so a signature never
 * waits on the disk. `serve` writes the HTTP API's records through it and `keyserver` the Keyless
 * server's.
 *
 * @module
 */

import type { AuditSink } from "../core/audit.ts";
import type { AuditRecord } from "../host/audit.ts";
import type { Metrics } from "../host/metrics.ts";

/** Where buffered lines go: a file opened for appending, or standard output. */
interface Sink {
  write(bytes: Uint8Array): Promise<number>;
  close(): void;
}

/** Lines wait at most this long before they are written. */
const FLUSH_AFTER_MS = 100;
/** A buffer this large is written at once. */
const FLUSH_AT_BYTES = 64 * 1024;

/**
 * An append-only audit log of JSON lines.
 *
 * @example
 * ```ts
 * import { AuditLog } from "./audit_log.ts";
 *
 * const audit = AuditLog.open("-"); // standard output; or a path, appended to
 * audit.record({ time: new Date().toISOString(), requestId: "r-1", method: "GET", route: "/v1/keys", status: 200, token: "admin", ms: 1.2 });
 * await audit.close(); // writes what is buffered
 * ```
 */
export class AuditLog<R extends object = AuditRecord> implements AuditSink<R> {
  readonly #path: string;
  #sink: Sink;
  readonly #metrics?: Metrics;
  readonly #encoder = new TextEncoder();
  #buffered = "";
  #timer?: ReturnType<typeof setTimeout>;
  /** The write under way; writes follow one another so lines keep their order. */
  #writing: Promise<void> = Promise.resolve();

  private constructor(path: string, metrics?: Metrics) {
    this.#path = path;
    this.#sink = openSink(path);
    this.#metrics = metrics;
  }

  /**
   * Opens `path` for appending (created with mode 0600 when it does not exist), or standard
   * output for `"-"`. Throws when the file cannot be opened, so a server does not start without
   * the audit log it was asked for. Write failures are counted in `metrics` as
   * `keycell_audit_write_failures_total`.
   */
  static open<R extends object = AuditRecord>(path: string, metrics?: Metrics): AuditLog<R> {
    return new AuditLog<R>(path, metrics);
  }

  /** Queues one record; it is written within 100 ms. */
  record(record: R): void {
    this.#buffered += JSON.stringify(record) + "\n";
    if (this.#buffered.length >= FLUSH_AT_BYTES) {
      this.flush();
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), FLUSH_AFTER_MS);
    }
  }

  /** Writes every queued record; resolves once they are written (or their write failed). */
  flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#buffered === "") return this.#writing;
    const bytes = this.#encoder.encode(this.#buffered);
    this.#buffered = "";
    this.#writing = this.#writing.then(() => this.#writeAll(bytes));
    return this.#writing;
  }

  /**
   * Writes what is queued to the file, closes it and opens its path again: after a log rotation
   * moved the file away, new records go to a new file. Throws (and keeps the old file) when the
   * path cannot be opened.
   */
  async reopen(): Promise<void> {
    await this.flush();
    const sink = openSink(this.#path);
    this.#sink.close();
    this.#sink = sink;
  }

  /** Writes what is queued, then closes the file. */
  async close(): Promise<void> {
    await this.flush();
    this.#sink.close();
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    try {
      for (let at = 0; at < bytes.length;) at += await this.#sink.write(bytes.subarray(at));
    } catch (err) {
      // A signer keeps signing when its log cannot be written; the operator hears of each loss.
      this.#metrics?.auditWriteFailed();
      console.error(`keycell: audit log write failed, ${bytes.length} bytes lost: ${(err as Error).message}`);
    }
  }
}

function openSink(path: string): Sink {
  if (path === "-") return { write: (bytes) => Deno.stdout.write(bytes), close: () => {} };
  return Deno.openSync(path, { append: true, create: true, mode: 0o600 });
}
