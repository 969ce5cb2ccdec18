/**
 * Where audit records go. The HTTP app and the Keyless server hand each record to a sink and
 * never wait for it; the sink (a file, standard output, a platform's log) decides how to write.
 *
 * @module
 */

/**
 * Takes audit records without blocking the request that made them.
 *
 * @example
 * ```ts
 * import type { AuditSink } from "./audit.ts";
 *
 * const lines: string[] = [];
 * const sink: AuditSink<{ route: string }> = { record: (r) => void lines.push(JSON.stringify(r)) };
 * sink.record({ route: "/v1/keys" });
 * ```
 */
export interface AuditSink<R extends object> {
  /** Queues one record; never throws for the writer's sake. */
  record(record: R): void;
}
