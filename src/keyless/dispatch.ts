/**
 * Opcode dispatch: answers one decoded Keyless operation. Pings are answered at once; sign
 * opcodes find their key through a {@linkcode KeyFinder} and sign through the guest; the
 * keycell-private opcodes are honoured on the private Unix socket only.
 *
 * @module
 */

import { ALGORITHM_BY_KEYLESS_OPCODE } from "../core/algorithms.ts";
import {
  ALGORITHM_CODES,
  decodeResponse as decodeSignerResponse,
  encodeRequest,
  type KeyFileReport,
  keyIdBytes,
  Op,
  Status,
  statusKeylessError,
} from "../core/protocol.ts";
import { encodeMessage, ErrorCode, errorResponse, Opcode } from "./codec.ts";
import { findKeyFor, type KeyFinder } from "./key_finder.ts";
import type { Operation } from "./operation.ts";

/** Where one operation came from, and how it reaches the guest. */
export interface DispatchContext {
  /** The private Unix socket: keycell-private opcodes are allowed. */
  private: boolean;
  /** One call into the guest, in this connection's turn. */
  call(request: Uint8Array): Promise<Uint8Array>;
}

/** What an answer was, for the audit log. */
export interface Outcome {
  answer: Uint8Array;
  /** The key the operation resolved to. */
  keyId?: string;
  /** The error answered, if any. */
  error?: ErrorCode;
}

/** What dispatch needs besides the guest. */
export interface DispatchOptions {
  keys: KeyFinder;
  /** The key-file report the keycell-private KEY_FILES opcode answers with. */
  keyFiles?: () => readonly KeyFileReport[];
}

/**
 * Answers one well-framed operation; never rejects for the operation's sake.
 *
 * @example
 * ```ts
 * const { answer } = await dispatch(decodeOperation(message), { private: false, call: (r) => lane.call(r) }, { keys });
 * ```
 */
export async function dispatch(op: Operation, context: DispatchContext, options: DispatchOptions): Promise<Outcome> {
  const { id, opcode, payload } = op;
  const fail = (error: ErrorCode, keyId?: string): Outcome => ({ answer: errorResponse(id, error), error, keyId });
  const ok = (body: Uint8Array, keyId?: string): Outcome => ({ answer: encodeMessage({ id, opcode: Opcode.RESPONSE, payload: body }), keyId });
  if (opcode === undefined) return fail(ErrorCode.FORMAT);

  if (opcode === Opcode.PING) return { answer: encodeMessage({ id, opcode: Opcode.PONG, payload: payload ?? new Uint8Array() }) };
  if (opcode === Opcode.RESPONSE || opcode === Opcode.PONG || opcode === Opcode.ERROR) return fail(ErrorCode.UNEXPECTED_OPCODE);
  if (context.private && opcode === Opcode.KEYCELL_MESSAGE) {
    if (payload === undefined || payload.length === 0) return fail(ErrorCode.FORMAT);
    return ok(await context.call(payload));
  }
  if (context.private && opcode === Opcode.KEYCELL_KEY_FILES) {
    return ok(new TextEncoder().encode(JSON.stringify(options.keyFiles?.() ?? [])));
  }
  const algorithm = ALGORITHM_BY_KEYLESS_OPCODE.get(opcode);
  if (algorithm === undefined) return fail(ErrorCode.BAD_OPCODE);
  if (payload === undefined || payload.length === 0) return fail(ErrorCode.FORMAT);

  const key = await findKeyFor(options.keys, op);
  if (typeof key === "number") return fail(key);
  const request = encodeRequest(Op.SIGN, keyIdBytes(key)!, Uint8Array.of(ALGORITHM_CODES[algorithm], 0), payload);
  const { status, body } = decodeSignerResponse(await context.call(request));
  if (status !== Status.OK) return fail(statusKeylessError(status), key);
  return ok(body, key);
}
