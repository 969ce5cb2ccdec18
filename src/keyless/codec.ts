/**
 * The Keyless SSL wire protocol (v1.0): framing, items, opcodes and error codes.
 *
 * Written from the protocol's description (shared/notes/keyless-protocol.md) and this module's
 * tests, not from any implementation. Pure functions and one incremental frame reader; no I/O.
 *
 * A message is an 8-byte header (`major 0x01 || minor 0x00 || body length u16 BE || id u32 BE`)
 * followed by a body of items (`tag u8 || length u16 BE || data`). Messages shorter than 1024
 * bytes are padded to 1024 with a padding item; unknown tags are ignored.
 *
 * @module
 */

/** Protocol version this codec speaks. */
export const VERSION_MAJOR = 1;
/** Minor version written in every header (any minor version is read). */
export const VERSION_MINOR = 0;
/** Length of a message header. */
export const HEADER_BYTES = 8;
/** Largest body a header can describe. */
export const MAX_BODY_BYTES = 0xffff;
/** Messages shorter than this are padded up to it. */
export const PAD_TO = 1024;
/** Length of an item header (tag + length). */
export const ITEM_HEADER_BYTES = 3;

/** Item tags. */
export const Tag = {
  CERTIFICATE_DIGEST: 0x01,
  SNI: 0x02,
  CLIENT_IP: 0x03,
  SKI: 0x04,
  SERVER_IP: 0x05,
  CERT_ID: 0x06,
  OPCODE: 0x11,
  PAYLOAD: 0x12,
  CUSTOM_FUNC_NAME: 0x13,
  EXTRA: 0x14,
  SPAN: 0x15,
  REQUEST_CONTEXT: 0x16,
  COMPLIANCE_REGION: 0x17,
  PADDING: 0x20,
} as const;

/** Opcodes. */
export const Opcode = {
  RSA_DECRYPT: 0x01,
  RSA_SIGN_MD5SHA1: 0x02,
  RSA_SIGN_SHA1: 0x03,
  RSA_SIGN_SHA224: 0x04,
  RSA_SIGN_SHA256: 0x05,
  RSA_SIGN_SHA384: 0x06,
  RSA_SIGN_SHA512: 0x07,
  ECDSA_SIGN_MD5SHA1: 0x12,
  ECDSA_SIGN_SHA1: 0x13,
  ECDSA_SIGN_SHA224: 0x14,
  ECDSA_SIGN_SHA256: 0x15,
  ECDSA_SIGN_SHA384: 0x16,
  ECDSA_SIGN_SHA512: 0x17,
  ED25519_SIGN: 0x18,
  SEAL: 0x21,
  UNSEAL: 0x22,
  RPC: 0x23,
  CUSTOM: 0x24,
  RSA_PSS_SIGN_SHA256: 0x35,
  RSA_PSS_SIGN_SHA384: 0x36,
  RSA_PSS_SIGN_SHA512: 0x37,
  /**
   * keycell-private (not part of Keyless SSL): the payload is a key-service RPC request
   * (src/core/key_service_rpc.ts) and the 0xF0 response's payload is its response. Accepted only
   * on the key server's Unix socket; anywhere else it answers BAD_OPCODE like any unknown opcode.
   */
  KEYCELL_KEY_SERVICE: 0xc0,
  /** keycell-private: the key server's key-file report as JSON. Unix socket only. */
  KEYCELL_KEY_FILES: 0xc1,
  RESPONSE: 0xf0,
  PING: 0xf1,
  PONG: 0xf2,
  ERROR: 0xff,
} as const;

/** Error codes, the one-byte payload of an {@linkcode Opcode.ERROR} response (keycell's one table of them). */
export { KeylessError as ErrorCode } from "../core/errors.ts";
import { KeylessError as ErrorCode } from "../core/errors.ts";
/** A name for each error code, for messages and logs. */
export const ERROR_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(ErrorCode).map(([name, code]) => [code, name.toLowerCase()]),
);

/** One TLV item. */
export interface Item {
  tag: number;
  data: Uint8Array;
}

/** A decoded message: its id and its items, in order (padding dropped). */
export interface Message {
  id: number;
  items: Item[];
}

/** A message to encode: the opcode and whichever items it carries. */
export interface MessageFields {
  id: number;
  opcode: number;
  payload?: Uint8Array;
  ski?: Uint8Array;
  certificateDigest?: Uint8Array;
  sni?: Uint8Array;
  clientIp?: Uint8Array;
  serverIp?: Uint8Array;
  /** More items, written after the ones above (tests use it for unknown tags). */
  extraItems?: Item[];
}

/**
 * Encodes a message; pads it to {@linkcode PAD_TO} bytes unless `pad` is false. Throws a
 * RangeError when an item or the body is longer than the format allows.
 *
 * @example
 * ```ts
 * import { encodeMessage, Opcode, PAD_TO } from "./codec.ts";
 *
 * const ping = encodeMessage({ id: 7, opcode: Opcode.PING, payload: new Uint8Array([1, 2]) });
 * ping.length === PAD_TO; // true: padded
 * ```
 */
export function encodeMessage(fields: MessageFields, pad = true): Uint8Array {
  const items: Item[] = [{ tag: Tag.OPCODE, data: new Uint8Array([fields.opcode]) }];
  if (fields.payload !== undefined) items.push({ tag: Tag.PAYLOAD, data: fields.payload });
  if (fields.ski !== undefined) items.push({ tag: Tag.SKI, data: fields.ski });
  if (fields.certificateDigest !== undefined) items.push({ tag: Tag.CERTIFICATE_DIGEST, data: fields.certificateDigest });
  if (fields.sni !== undefined) items.push({ tag: Tag.SNI, data: fields.sni });
  if (fields.clientIp !== undefined) items.push({ tag: Tag.CLIENT_IP, data: fields.clientIp });
  if (fields.serverIp !== undefined) items.push({ tag: Tag.SERVER_IP, data: fields.serverIp });
  items.push(...(fields.extraItems ?? []));
  return encodeItems(fields.id, items, pad);
}

/**
 * Encodes a message from raw items (any tags, any order).
 *
 * @example
 * ```ts
 * import { encodeItems, Opcode, Tag } from "./codec.ts";
 *
 * // An unpadded ping: 8-byte header, then one 4-byte item.
 * const frame = encodeItems(1, [{ tag: Tag.OPCODE, data: new Uint8Array([Opcode.PING]) }], false);
 * frame.length; // 12
 * ```
 */
export function encodeItems(id: number, items: Item[], pad = true): Uint8Array {
  let bodyLength = 0;
  for (const item of items) {
    if (item.data.length > 0xffff) throw new RangeError(`item 0x${item.tag.toString(16)} is longer than 65535 bytes`);
    bodyLength += ITEM_HEADER_BYTES + item.data.length;
  }
  // Pad so the whole message is PAD_TO bytes; a body within 3 bytes of it gets an empty padding
  // item and ends a little longer than PAD_TO.
  let padding = -1;
  if (pad && HEADER_BYTES + bodyLength < PAD_TO) {
    padding = Math.max(0, PAD_TO - HEADER_BYTES - bodyLength - ITEM_HEADER_BYTES);
    bodyLength += ITEM_HEADER_BYTES + padding;
  }
  if (bodyLength > MAX_BODY_BYTES) throw new RangeError(`body of ${bodyLength} bytes is longer than 65535`);
  const out = new Uint8Array(HEADER_BYTES + bodyLength);
  const view = new DataView(out.buffer);
  out[0] = VERSION_MAJOR;
  out[1] = VERSION_MINOR;
  view.setUint16(2, bodyLength);
  view.setUint32(4, id >>> 0);
  let at = HEADER_BYTES;
  const put = (tag: number, data: Uint8Array) => {
    out[at] = tag;
    view.setUint16(at + 1, data.length);
    out.set(data, at + ITEM_HEADER_BYTES);
    at += ITEM_HEADER_BYTES + data.length;
  };
  for (const item of items) put(item.tag, item.data);
  if (padding >= 0) put(Tag.PADDING, new Uint8Array(padding));
  return out;
}

/**
 * Parses a body into items, dropping padding. Returns `undefined` when an item runs past the end
 * of the body (a format error for that message only: the header's length still frames it).
 *
 * @example
 * ```ts
 * import { decodeItems, encodeMessage, HEADER_BYTES, Opcode } from "./codec.ts";
 *
 * const body = encodeMessage({ id: 1, opcode: Opcode.PING }).subarray(HEADER_BYTES);
 * const items = decodeItems(body); // [{ tag: 0x11, data: Uint8Array [0xf1] }]: padding dropped
 * decodeItems(body.subarray(0, 2)); // undefined: cut inside an item header
 * ```
 */
export function decodeItems(body: Uint8Array): Item[] | undefined {
  const items: Item[] = [];
  let at = 0;
  while (at < body.length) {
    if (at + ITEM_HEADER_BYTES > body.length) return undefined;
    const tag = body[at];
    const length = (body[at + 1] << 8) | body[at + 2];
    const start = at + ITEM_HEADER_BYTES;
    if (start + length > body.length) return undefined;
    if (tag !== Tag.PADDING) items.push({ tag, data: body.subarray(start, start + length) });
    at = start + length;
  }
  return items;
}

/**
 * The last item with `tag`, or `undefined`.
 *
 * @example
 * ```ts
 * import { findItem, type Item, Opcode, Tag } from "./codec.ts";
 *
 * const items: Item[] = [
 *   { tag: Tag.OPCODE, data: new Uint8Array([Opcode.PING]) },
 *   { tag: Tag.PAYLOAD, data: new Uint8Array([1, 2]) },
 * ];
 * const payload = findItem(items, Tag.PAYLOAD); // Uint8Array [1, 2]
 * findItem(items, Tag.SKI); // undefined
 * ```
 */
export function findItem(items: Item[], tag: number): Uint8Array | undefined {
  for (let i = items.length - 1; i >= 0; i--) if (items[i].tag === tag) return items[i].data;
  return undefined;
}

/** A response as a client sees it. */
export type Response =
  | { id: number; kind: "ok"; payload: Uint8Array }
  | { id: number; kind: "pong"; payload: Uint8Array }
  | { id: number; kind: "error"; code: number }
  | { id: number; kind: "other"; opcode: number | undefined; items: Item[] };

/**
 * Interprets a decoded message as a response.
 *
 * @example
 * ```ts
 * import { decodeFrame, decodeResponse, encodeMessage, Opcode } from "./codec.ts";
 *
 * const frame = decodeFrame(encodeMessage({ id: 5, opcode: Opcode.PONG, payload: new Uint8Array([9]) }));
 * if (frame?.kind === "message") {
 *   const res = decodeResponse(frame.message); // { id: 5, kind: "pong", payload: Uint8Array [9] }
 * }
 * ```
 */
export function decodeResponse(message: Message): Response {
  const opcode = findItem(message.items, Tag.OPCODE);
  const payload = findItem(message.items, Tag.PAYLOAD) ?? new Uint8Array();
  const op = opcode?.length === 1 ? opcode[0] : undefined;
  if (op === Opcode.RESPONSE) return { id: message.id, kind: "ok", payload };
  if (op === Opcode.PONG) return { id: message.id, kind: "pong", payload };
  if (op === Opcode.ERROR && payload.length === 1) return { id: message.id, kind: "error", code: payload[0] };
  return { id: message.id, kind: "other", opcode: op, items: message.items };
}

/**
 * An error response for `id`.
 *
 * @example
 * ```ts
 * import { decodeFrame, decodeResponse, ErrorCode, errorResponse } from "./codec.ts";
 *
 * const frame = errorResponse(9, ErrorCode.KEY_NOT_FOUND);
 * const decoded = decodeFrame(frame);
 * if (decoded?.kind === "message") decodeResponse(decoded.message); // { id: 9, kind: "error", code: 2 }
 * ```
 */
export function errorResponse(id: number, code: ErrorCode): Uint8Array {
  // Encoded once per code and copied with the id set: an overloaded server answers most
  // requests with INTERNAL, and copying a kilobyte costs less than encoding it.
  let template = errorTemplates.get(code);
  if (template === undefined) {
    template = encodeMessage({ id: 0, opcode: Opcode.ERROR, payload: new Uint8Array([code]) });
    errorTemplates.set(code, template);
  }
  const out = template.slice();
  new DataView(out.buffer).setUint32(4, id >>> 0);
  return out;
}

const errorTemplates = new Map<number, Uint8Array>();

/** What {@linkcode FrameReader.next} found. */
export type Frame =
  /** A whole message whose items parsed. */
  | { kind: "message"; message: Message }
  /** A whole message whose body did not parse into items: framing is intact. */
  | { kind: "malformed"; id: number }
  /** A header whose major version is not 1: nothing after it can be framed. */
  | { kind: "bad-version"; id: number };

/**
 * Cuts a byte stream into frames. Holds at most one incomplete frame (<= 8 + 65535 bytes) plus
 * the last chunk pushed.
 *
 * @example
 * ```ts
 * import { encodeMessage, FrameReader, Opcode } from "./codec.ts";
 *
 * // A frame that arrives in two chunks.
 * const bytes = encodeMessage({ id: 1, opcode: Opcode.PING });
 * const reader = new FrameReader();
 * reader.push(bytes.subarray(0, 100));
 * reader.next(); // undefined: not whole yet
 * reader.push(bytes.subarray(100));
 * reader.next()?.kind; // "message"
 * ```
 */
export class FrameReader {
  #buffer = new Uint8Array(0);
  #start = 0;
  #end = 0;

  /** Bytes received but not yet returned as a frame. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Appends bytes from the stream. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const live = this.#end - this.#start;
    if (this.#end + chunk.length > this.#buffer.length) {
      const size = Math.max(live + chunk.length, Math.min(2 * this.#buffer.length, HEADER_BYTES + MAX_BODY_BYTES));
      const next = new Uint8Array(Math.max(size, live + chunk.length));
      next.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = next;
      this.#start = 0;
      this.#end = live;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** The next complete frame, or `undefined` until more bytes arrive. */
  next(): Frame | undefined {
    const available = this.#end - this.#start;
    if (available < HEADER_BYTES) return undefined;
    const b = this.#buffer;
    const s = this.#start;
    const id = ((b[s + 4] << 24) | (b[s + 5] << 16) | (b[s + 6] << 8) | b[s + 7]) >>> 0;
    if (b[s] !== VERSION_MAJOR) {
      // The length field of an unknown version means nothing: stop framing this stream.
      this.#start = this.#end;
      return { kind: "bad-version", id };
    }
    const length = (b[s + 2] << 8) | b[s + 3];
    if (available < HEADER_BYTES + length) return undefined;
    // Copy the body out so the message does not pin (or see later writes to) the buffer.
    const body = b.slice(s + HEADER_BYTES, s + HEADER_BYTES + length);
    this.#start += HEADER_BYTES + length;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    const items = decodeItems(body);
    return items === undefined ? { kind: "malformed", id } : { kind: "message", message: { id, items } };
  }
}

/**
 * Decodes exactly one whole message (for tests and clients that already framed it).
 *
 * @example
 * ```ts
 * import { decodeFrame, encodeMessage, Opcode } from "./codec.ts";
 *
 * const frame = decodeFrame(encodeMessage({ id: 1, opcode: Opcode.PING })); // { kind: "message", message: { id: 1, items } }
 * ```
 */
export function decodeFrame(bytes: Uint8Array): Frame | undefined {
  const reader = new FrameReader();
  reader.push(bytes);
  const frame = reader.next();
  return frame !== undefined && reader.buffered === 0 ? frame : undefined;
}
