/**
 * The key server's audit records: one per request from a TCP or TLS client. Requests on the
 * private Unix socket are the HTTP host's, which records them itself.
 *
 * @module
 */

import { toHex } from "../core/protocol.ts";
import { ErrorCode, Opcode } from "./codec.ts";
import type { Operation } from "./operation.ts";

/** One Keyless request from a TCP or TLS client, as the key server's audit log records it. */
export interface KeylessAuditRecord {
  /** When the answer was ready, ISO 8601 in UTC. */
  time: string;
  /** The client's address. */
  remote?: string;
  /** The subject common name of the client's certificate, when the listener requires one. */
  client?: string;
  /** The opcode's name, such as `ECDSA_SIGN_SHA256` (hex for an opcode keycell does not know). */
  opcode: string;
  /** The SKI the request named, lowercase hex. */
  ski?: string;
  /** The keycell key it resolved to. */
  keyId?: string;
  /** The Keyless error answered, such as `KEY_NOT_FOUND`; absent on success. */
  error?: string;
  /** Milliseconds from the request's arrival to its answer. */
  ms: number;
}

const OPCODE_NAMES = new Map<number, string>(Object.entries(Opcode).map(([name, code]) => [code, name]));
const ERROR_NAMES = new Map<number, string>(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/**
 * The audit record of one answered operation.
 *
 * @example
 * ```ts
 * import { auditRecord } from "./audit.ts";
 * import { ErrorCode, Opcode } from "./codec.ts";
 *
 * const startedAt = performance.now();
 * const op = { id: 7, opcode: Opcode.ECDSA_SIGN_SHA256, ski: new Uint8Array(20) };
 * const record = auditRecord(op, { remote: "192.0.2.1" }, { error: ErrorCode.KEY_NOT_FOUND }, startedAt);
 * record.opcode; // "ECDSA_SIGN_SHA256"
 * record.error; // "KEY_NOT_FOUND"
 * ```
 */
export function auditRecord(
  op: Operation,
  peer: { remote?: string; client?: string },
  outcome: { keyId?: string; error?: ErrorCode },
  startedAt: number,
): KeylessAuditRecord {
  const opcode = op.opcode !== undefined
    ? OPCODE_NAMES.get(op.opcode) ?? `0x${toHex(Uint8Array.of(op.opcode))}`
    : op.malformedOpcode !== undefined
    ? `0x${toHex(op.malformedOpcode)}`
    : "none";
  return {
    time: new Date().toISOString(),
    remote: peer.remote,
    client: peer.client,
    opcode,
    ski: op.ski && toHex(op.ski),
    keyId: outcome.keyId,
    error: outcome.error === undefined ? undefined : ERROR_NAMES.get(outcome.error),
    ms: Math.round((performance.now() - startedAt) * 1000) / 1000,
  };
}
