/**
 * The HTTP API's audit record: one for each request, saying which token did what to which key
 * and how it ended. Requests that fail authentication are recorded too, without a token name. A
 * record never holds a token, a key or a message: only names, ids, the algorithm and the SHA-256
 * of the message that was signed. Records go to an {@linkcode AuditSink}.
 *
 * @module
 */

import type { ErrorCode } from "../core/errors.ts";
import type { AuditSink } from "../core/audit.ts";

/** One request, as the audit log records it. */
export interface AuditRecord {
  /** When the answer was ready, ISO 8601 in UTC. */
  time: string;
  /** The request's `X-Request-Id`: the client's, when well formed, else one made for it. */
  requestId: string;
  /** The client's address, when the server knows it. */
  remote?: string;
  /** The name of the token that authenticated the request; absent when none did. */
  token?: string;
  method: string;
  /** The route pattern, such as `/v1/keys/:id/sign`. */
  route: string;
  status: number;
  /** The error code of a failed request. */
  error?: ErrorCode;
  /** The key the request named or made (for a name, the key it stood for). */
  keyId?: string;
  /** The key name the request named, when it named one. */
  keyName?: string;
  keySpec?: string;
  algorithm?: string;
  /** Lowercase hex SHA-256 of the message bytes a sign request sent (RAW or DIGEST alike). */
  messageSha256?: string;
  /** A batch's items, in order: each one's algorithm, message hash and error, as for one signature. */
  batch?: AuditBatchItem[];
  /** Milliseconds from the request's arrival to its answer. */
  ms: number;
}

/** One item of a `sign-batch` request, as the audit log records it. */
export interface AuditBatchItem {
  algorithm?: string;
  messageSha256?: string;
  error?: ErrorCode;
}

/** Where the app's audit records go. */
export type AuditTrail = AuditSink<AuditRecord>;
