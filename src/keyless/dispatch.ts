/**
 * Opcode dispatch: answers one decoded Keyless operation. Pings are answered at once; sign
 * opcodes find their key through a {@linkcode KeyFinder} and sign through the key service; the
 * keycell-private opcodes are honoured on the private Unix socket only.
 *
 * @module
 */

import { ALGORITHM_BY_KEYLESS_OPCODE } from "../core/algorithms.ts";
import { KeycellError, keylessErrorOf } from "../core/errors.ts";
import type { KeyService } from "../core/key_service.ts";
import { failureResponse } from "../core/key_service_rpc.ts";
import type { KeyFileReport } from "../core/protocol.ts";
import { encodeMessage, ErrorCode, errorResponse, Opcode } from "./codec.ts";
import { findKeyFor, type KeyFinder } from "./key_finder.ts";
import type { Operation } from "./operation.ts";
import type { Job, RunOptions } from "../core/scheduler.ts";

/** Where one operation came from, and how its work is scheduled. */
export interface DispatchContext {
  /** The private Unix socket: keycell-private opcodes are allowed. */
  private: boolean;
  /** Runs one call into the key service, in this connection's turn. */
  run<T>(job: Job<T>, options?: RunOptions): Promise<T>;
  /**
   * Whether `run` would refuse a call now (the server is overloaded): a sign request is then
   * refused before its key is looked up, so refusing costs little.
   */
  refuses?(): boolean;
}

/** What an answer was, for the audit log. */
export interface Outcome {
  answer: Uint8Array;
  /** The key the operation resolved to. */
  keyId?: string;
  /** The error answered, if any. */
  error?: ErrorCode;
}

/** What dispatch answers with. */
export interface DispatchOptions {
  /** Signs for the sign opcodes. */
  service: Pick<KeyService, "sign">;
  /** Answers a key-service RPC request (`src/core/key_service_rpc.ts`), the KEYCELL_KEY_SERVICE opcode's payload. */
  rpc: (request: Uint8Array) => Promise<Uint8Array>;
  keys: KeyFinder;
  /** The key-file report the keycell-private KEY_FILES opcode answers with. */
  keyFiles?: () => readonly KeyFileReport[];
}

/**
 * Answers one well-framed operation; never rejects for the operation's sake.
 *
 * @example
 * ```ts
 * import { dispatch, type DispatchOptions } from "./dispatch.ts";
 * import { decodeOperation } from "./operation.ts";
 * import type { Message } from "./codec.ts";
 * import type { Lane } from "../core/scheduler.ts";
 *
 * async function answer(message: Message, lane: Lane, options: DispatchOptions): Promise<Uint8Array> {
 *   const { answer } = await dispatch(decodeOperation(message), { private: false, run: (job) => lane.run(job) }, options);
 *   return answer;
 * }
 * ```
 */
export async function dispatch(op: Operation, context: DispatchContext, options: DispatchOptions): Promise<Outcome> {
  const { id, opcode, payload } = op;
  const fail = (error: ErrorCode, keyId?: string): Outcome => ({ answer: errorResponse(id, error), error, keyId });
  const ok = (body: Uint8Array, keyId?: string): Outcome => ({ answer: encodeMessage({ id, opcode: Opcode.RESPONSE, payload: body }), keyId });
  if (opcode === undefined) return fail(ErrorCode.FORMAT);

  if (opcode === Opcode.PING) return { answer: encodeMessage({ id, opcode: Opcode.PONG, payload: payload ?? new Uint8Array() }) };
  if (opcode === Opcode.RESPONSE || opcode === Opcode.PONG || opcode === Opcode.ERROR) return fail(ErrorCode.UNEXPECTED_OPCODE);
  if (context.private && opcode === Opcode.KEYCELL_KEY_SERVICE) {
    if (payload === undefined || payload.length === 0) return fail(ErrorCode.FORMAT);
    // The handler never rejects; the scheduler does when it drops the call. Not for its wait:
    // `serve` bounds that itself (KEYCELL_MAX_QUEUE_WAIT_MS) before it sends a request, and
    // KEYCELL_KEYSERVER_MAX_QUEUE_WAIT_MS is set for Keyless clients' timeouts.
    const answer = await context.run(() => options.rpc(payload), { bounded: false }).catch((err) =>
      failureResponse(err instanceof KeycellError ? err : new KeycellError("internal", "the key service failed on this request"))
    );
    return ok(answer);
  }
  if (context.private && opcode === Opcode.KEYCELL_KEY_FILES) {
    return ok(new TextEncoder().encode(JSON.stringify(options.keyFiles?.() ?? [])));
  }
  const algorithm = ALGORITHM_BY_KEYLESS_OPCODE.get(opcode);
  if (algorithm === undefined) return fail(ErrorCode.BAD_OPCODE);
  if (payload === undefined || payload.length === 0) return fail(ErrorCode.FORMAT);
  if (context.refuses?.()) return fail(ErrorCode.INTERNAL);

  const key = await findKeyFor(options.keys, op);
  if (typeof key === "number") return fail(key);
  try {
    const signature = await context.run(() => options.service.sign({ keyId: key, algorithm, messageType: "DIGEST", message: payload }));
    return ok(signature, key);
  } catch (err) {
    return fail(keylessErrorOf(err), key);
  }
}
