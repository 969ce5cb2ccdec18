/**
 * zod schemas for every request body and query, and the strict base64 every byte field uses.
 *
 * @module
 */

import { z } from "zod";
import { KEY_SPEC_NAMES, SIGNING_ALGORITHM_NAMES } from "../core/algorithms.ts";
import { KEY_ID_PATTERN } from "../core/protocol.ts";

/**
 * Decodes standard, padded base64, or returns `undefined` for anything else (whitespace,
 * URL-safe letters, missing padding, non-zero trailing bits).
 *
 * @example
 * ```ts
 * decodeBase64("AQI="); // Uint8Array [1, 2]
 * decodeBase64("AQJ="); // undefined
 * ```
 */
export function decodeBase64(text: string): Uint8Array | undefined {
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(text, { lastChunkHandling: "strict" });
  } catch {
    return undefined;
  }
  // fromBase64 skips ASCII whitespace; only the one canonical spelling of the bytes is accepted.
  return bytes.toBase64() === text ? bytes : undefined;
}

/** `POST /v1/keys/{id}/sign`. */
export const SignBody = z.object({
  algorithm: z.enum(SIGNING_ALGORITHM_NAMES),
  messageType: z.enum(["DIGEST", "RAW"]),
  message: z.string().min(1, "message must not be empty"),
  signatureFormat: z.enum(["DER", "RAW"]).optional(),
}).strict();

/** A parsed {@linkcode SignBody}. */
export type SignBody = z.infer<typeof SignBody>;

/** `POST /v1/keys`. */
export const GenerateBody = z.object({ keySpec: z.enum(KEY_SPEC_NAMES) }).strict();

/** `POST /v1/keys/import`: `wrappedKey` is base64 of the 512-byte RSA-OAEP ciphertext followed by the RFC 5649 key wrap. */
export const ImportBody = z.object({
  keySpec: z.enum(KEY_SPEC_NAMES),
  wrappedKey: z.string().min(1, "wrappedKey must not be empty"),
}).strict();

/** Largest page `GET /v1/keys` answers. */
export const MAX_PAGE = 1000;

/** Keys a page has when the query does not say. */
const DEFAULT_PAGE = 100;

/** `GET /v1/keys?limit=&cursor=`. */
export const PageQuery = z.object({
  limit: z.string().optional()
    .transform((text) => text === undefined ? DEFAULT_PAGE : Number(text))
    .refine((n) => Number.isSafeInteger(n) && n >= 1 && n <= MAX_PAGE, `must be an integer from 1 to ${MAX_PAGE}`),
  cursor: z.string().regex(KEY_ID_PATTERN, "must be a nextCursor from a previous page").optional(),
});
