/**
 * Opcode dispatch: answers one decoded Keyless operation. Pings are answered at once; sign
 * opcodes find their key through a {@linkcode KeyFinder} and sign through the guest; the
 * keycell-private opcodes are honoured on the private Unix socket only.
 *
 * @module
 */

import type { KeyFileReport } from "../guest/compartment.ts";
import {
  ALGORITHM_CODES,
  type AlgorithmName,
  decodeResponse as decodeSignerResponse,
  encodeRequest,
  keyIdBytes,
  Op,
  Status,
} from "../guest/protocol.ts";
import { encodeMessage, ErrorCode, errorResponse, Opcode } from "./codec.ts";
import { findKeyFor, type KeyFinder } from "./key_finder.ts";
import type { Operation } from "./operation.ts";

/** The Keyless sign opcodes and the guest algorithm each maps to. Payloads are digests. */
export const SIGN_ALGORITHMS: ReadonlyMap<number, AlgorithmName> = new Map<number, AlgorithmName>([
  [Opcode.RSA_SIGN_MD5SHA1, "RSASSA_PKCS1_V1_5_MD5_SHA1"],
  [Opcode.RSA_SIGN_SHA1, "RSASSA_PKCS1_V1_5_SHA_1"],
  [Opcode.RSA_SIGN_SHA224, "RSASSA_PKCS1_V1_5_SHA_224"],
  [Opcode.RSA_SIGN_SHA256, "RSASSA_PKCS1_V1_5_SHA_256"],
  [Opcode.RSA_SIGN_SHA384, "RSASSA_PKCS1_V1_5_SHA_384"],
  [Opcode.RSA_SIGN_SHA512, "RSASSA_PKCS1_V1_5_SHA_512"],
  [Opcode.ECDSA_SIGN_MD5SHA1, "ECDSA_MD5_SHA1"],
  [Opcode.ECDSA_SIGN_SHA1, "ECDSA_SHA_1"],
  [Opcode.ECDSA_SIGN_SHA224, "ECDSA_SHA_224"],
  [Opcode.ECDSA_SIGN_SHA256, "ECDSA_SHA_256"],
  [Opcode.ECDSA_SIGN_SHA384, "ECDSA_SHA_384"],
  [Opcode.ECDSA_SIGN_SHA512, "ECDSA_SHA_512"],
  [Opcode.RSA_PSS_SIGN_SHA256, "RSASSA_PSS_SHA_256"],
  [Opcode.RSA_PSS_SIGN_SHA384, "RSASSA_PSS_SHA_384"],
  [Opcode.RSA_PSS_SIGN_SHA512, "RSASSA_PSS_SHA_512"],
]);

/**
 * How each compartment status answers on the wire. Transient failures are INTERNAL, never KEY_NOT_FOUND.
 *
 * @example
 * ```ts
 * errorCodeFor(Status.KEY_NOT_FOUND); // ErrorCode.KEY_NOT_FOUND
 * ```
 */
export function errorCodeFor(status: number): ErrorCode {
  switch (status) {
    case Status.KEY_NOT_FOUND:
      return ErrorCode.KEY_NOT_FOUND;
    case Status.BAD_REQUEST:
    case Status.BAD_DIGEST_LENGTH:
      return ErrorCode.FORMAT;
    case Status.WRONG_KEY_TYPE:
    case Status.CRYPTO_FAILURE:
      return ErrorCode.CRYPTO_FAILED;
    default:
      return ErrorCode.INTERNAL;
  }
}

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
  const algorithm = SIGN_ALGORITHMS.get(opcode);
  if (algorithm === undefined) return fail(ErrorCode.BAD_OPCODE);
  if (payload === undefined || payload.length === 0) return fail(ErrorCode.FORMAT);

  const key = await findKeyFor(options.keys, op);
  if (typeof key === "number") return fail(key);
  const request = encodeRequest(Op.SIGN, keyIdBytes(key)!, Uint8Array.of(ALGORITHM_CODES[algorithm], 0), payload);
  const { status, body } = decodeSignerResponse(await context.call(request));
  if (status !== Status.OK) return fail(errorCodeFor(status), key);
  return ok(body, key);
}
