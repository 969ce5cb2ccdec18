/**
 * A Keyless request decoded once into a typed operation: every later step (key lookup, dispatch,
 * audit) reads these fields instead of searching the items again.
 *
 * @module
 */

import { findItem, type Message, Tag } from "./codec.ts";

/** One request's fields. When an item appears more than once, the last one counts. */
export interface Operation {
  /** The request id, echoed in the answer. */
  id: number;
  /** The opcode, when the request carries a one-byte opcode item. */
  opcode?: number;
  /** The opcode item as sent, when it is not one byte long (for the audit log). */
  malformedOpcode?: Uint8Array;
  payload?: Uint8Array;
  ski?: Uint8Array;
  certificateDigest?: Uint8Array;
  sni?: Uint8Array;
}

/**
 * Reads the items a key server acts on out of a decoded message. Unknown items are ignored.
 *
 * @example
 * ```ts
 * import { decodeOperation } from "./operation.ts";
 * import { decodeFrame, encodeMessage, Opcode } from "./codec.ts";
 *
 * const frame = decodeFrame(encodeMessage({ id: 3, opcode: Opcode.PING, payload: new Uint8Array([1]) }));
 * if (frame?.kind === "message") {
 *   const op = decodeOperation(frame.message);
 *   op.opcode === Opcode.PING; // true, and op.payload is Uint8Array [1]
 * }
 * ```
 */
export function decodeOperation(message: Message): Operation {
  const { id, items } = message;
  const opcode = findItem(items, Tag.OPCODE);
  return {
    id,
    opcode: opcode?.length === 1 ? opcode[0] : undefined,
    malformedOpcode: opcode !== undefined && opcode.length !== 1 ? opcode : undefined,
    payload: findItem(items, Tag.PAYLOAD),
    ski: findItem(items, Tag.SKI),
    certificateDigest: findItem(items, Tag.CERTIFICATE_DIGEST),
    sni: findItem(items, Tag.SNI),
  };
}
