/**
 * zod schemas for every request body and query, for every answer the API gives (which
 * `/openapi.json` publishes), and the strict base64 every byte field uses.
 *
 * @module
 */

import { z } from "zod";
import { KEY_SPEC_NAMES, SIGNING_ALGORITHM_NAMES } from "../core/algorithms.ts";
import { ERROR_CODES, type ErrorCode } from "../core/errors.ts";
import { KEY_ID_PATTERN } from "../core/protocol.ts";
import {
  KEY_NAME_PATTERN,
  KEY_STATES,
  LABEL_NAME_PATTERN,
  MAX_DESCRIPTION,
  MAX_LABEL_VALUE,
  MAX_LABELS,
  PENDING_WINDOW_DAYS,
} from "../core/key_service.ts";
import { JWS_ALGORITHM_NAMES } from "./jose.ts";

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

/**
 * Standard padded base64 in the one spelling {@linkcode decodeBase64} accepts: the last group's
 * unused bits are zero. Checked here too so that `/openapi.json` says so.
 */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$/;

/** Base64url without padding, in its one canonical spelling (as `decodeBase64url` in jose.ts accepts it). */
const BASE64URL = /^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$/;

/** A byte field: standard padded base64. */
const Base64 = z.string().regex(BASE64, "must be standard padded base64");

/** `POST /v1/keys/{id}/sign`. */
export const SignBody = z.object({
  algorithm: z.enum(SIGNING_ALGORITHM_NAMES),
  messageType: z.enum(["DIGEST", "RAW"]),
  message: Base64.min(1, "message must not be empty"),
  signatureFormat: z.enum(["DER", "RAW"]).optional(),
}).strict();

/** A parsed {@linkcode SignBody}. */
export type SignBody = z.infer<typeof SignBody>;

/** `POST /v1/keys/{id}/verify`: a sign body and the signature to check. */
export const VerifyBody = SignBody.extend({ signature: Base64 }).strict();

/** Most items one `POST /v1/keys/{id}/sign-batch` signs. */
export const MAX_BATCH = 100;

/**
 * `POST /v1/keys/{id}/sign-batch`. Only the list is checked here; each item is a {@linkcode SignBody}
 * checked on its own, so a bad item fails alone.
 */
export const SignBatchBody = z.object({
  batch: z.array(z.unknown()).min(1, "batch must not be empty").max(MAX_BATCH, `batch holds at most ${MAX_BATCH} items`),
}).strict();

/** A JSON object: a JOSE header or a JWT claims set. */
const JsonObject = z.record(z.string(), z.unknown());

/** The JOSE header of `POST /v1/keys/{id}/jws`: `alg` is required, other members pass through. */
const ProtectedHeader = z.object({
  alg: z.enum(JWS_ALGORITHM_NAMES),
  kid: z.string().optional(),
  b64: z.literal(true, "unencoded payloads (RFC 7797) are not supported").optional(),
}).catchall(z.unknown());

/** `POST /v1/keys/{id}/jws`: `payload` is base64url without padding. */
export const JwsBody = z.object({
  protectedHeader: ProtectedHeader,
  payload: z.string().regex(BASE64URL, "must be base64url without padding"),
}).strict();

/** `POST /v1/keys/{id}/jwt`. */
export const JwtBody = z.object({
  claims: JsonObject,
  expiresIn: z.number().int("expiresIn must be whole seconds").positive().optional(),
  alg: z.enum(JWS_ALGORITHM_NAMES).optional(),
}).strict();

/** A new key's name, description and labels (see `checkKeyMetadata` in key_service.ts). */
const KeyMetadataFields = {
  name: z.string().regex(KEY_NAME_PATTERN, "letters, digits, '.', '_' and '-', at most 128, not 64 hex digits (an id)").optional(),
  description: z.string().max(MAX_DESCRIPTION).optional(),
  labels: z.record(z.string().regex(LABEL_NAME_PATTERN, "a label name: lowercase letters, digits, '.', '_', '-'"), z.string().max(MAX_LABEL_VALUE))
    .refine((labels) => Object.keys(labels).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`)
    .optional(),
};

/**
 * `POST /v1/keys`: `jwks` also publishes the new key in `/.well-known/jwks.json`; `name` (else
 * its id), `description` and `labels` are its metadata.
 */
export const GenerateBody = z.object({ keySpec: z.enum(KEY_SPEC_NAMES), jwks: z.boolean().optional(), ...KeyMetadataFields }).strict();

/** `POST /v1/keys/{name}/schedule-deletion`, as AWS KMS's ScheduleKeyDeletion takes it. */
export const ScheduleDeletionBody = z.object({
  pendingWindowDays: z.number().int().min(PENDING_WINDOW_DAYS.min).max(PENDING_WINDOW_DAYS.max).optional(),
}).strict();

/** `DELETE /v1/keys/{name}?immediately=true`: without it, a key is not deleted at once. */
export const DeleteQuery = z.object({ immediately: z.enum(["true", "false"]).optional() });

/** `GET /v1/keys/{id}?format=jwk|pem`: the public key alone, as a JWK, or as PEM text in the answer. */
export const KeyQuery = z.object({ format: z.enum(["jwk", "pem"]).optional() });

/** `POST /v1/keys/import`: `wrappedKey` is base64 of the 512-byte RSA-OAEP ciphertext followed by the RFC 5649 key wrap. */
export const ImportBody = z.object({
  keySpec: z.enum(KEY_SPEC_NAMES),
  wrappedKey: Base64.min(1, "wrappedKey must not be empty"),
  ...KeyMetadataFields,
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

/** A key id, in a path or an answer. */
const KeyId = z.string().regex(KEY_ID_PATTERN);

/** Names of {@linkcode ERROR_CODES}, for zod. */
const ERROR_CODE_NAMES = Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]];

/** keycell's error answer, `{error: {code, message}}`, whatever the status. */
export const ErrorAnswer = z.strictObject({ error: z.strictObject({ code: z.enum(ERROR_CODE_NAMES), message: z.string() }) });

/** A key as the API shows it: `GET /v1/keys/{id}`, each key of a page, an imported key. */
export const KeyAnswer = z.strictObject({ id: KeyId, keySpec: z.enum(KEY_SPEC_NAMES), publicKey: z.string(), name: z.string().optional() });

/** `GET /v1/keys/{id}?format=pem`: the key's id, spec and public key as a PEM `PUBLIC KEY` block. */
export const KeyPemAnswer = z.strictObject({ id: KeyId, keySpec: z.enum(KEY_SPEC_NAMES), name: z.string().optional(), publicKeyPem: z.string() });

/** A named key as `GET /v1/keys/{id}` and the key changes answer: its versions, state and metadata. */
export const KeyDetailsAnswer = KeyAnswer.extend({
  name: z.string(),
  state: z.enum(KEY_STATES),
  primary: KeyId,
  versions: z.array(z.strictObject({ id: KeyId, version: z.number().int().min(1), created: z.iso.datetime().optional() })),
  created: z.iso.datetime().optional(),
  description: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  deletionDate: z.iso.datetime().optional(),
});

/** `POST /v1/keys`: the new key; `jwks: true` when it was also published. */
export const GeneratedKeyAnswer = KeyAnswer.extend({ jwks: z.literal(true).optional() });

/** `GET /v1/keys`: a page of keys, and the cursor of the next page while there is one. */
export const KeyPageAnswer = z.strictObject({ keys: z.array(KeyAnswer), nextCursor: KeyId.optional() });

/** A public key as a JWK: `GET /v1/keys/{id}?format=jwk` and each key of the published set. */
export const PublicJwkAnswer = z.union([
  z.strictObject({ kty: z.literal("EC"), crv: z.string(), x: z.string(), y: z.string(), use: z.literal("sig"), kid: KeyId, alg: z.string() }),
  z.strictObject({ kty: z.literal("RSA"), n: z.string(), e: z.string(), use: z.literal("sig"), kid: KeyId }),
]);

/** `GET /.well-known/jwks.json`. */
export const JwkSetAnswer = z.strictObject({ keys: z.array(PublicJwkAnswer) });

/** `POST /v1/keys/{id}/sign`. */
export const SignAnswer = z.strictObject({ keyId: KeyId, algorithm: z.enum(SIGNING_ALGORITHM_NAMES), signature: z.string() });

/** `POST /v1/keys/{id}/sign-batch`: one result per item, in the items' order. */
export const SignBatchAnswer = z.strictObject({
  keyId: KeyId,
  results: z.array(z.union([z.strictObject({ signature: z.string() }), ErrorAnswer])),
});

/** `POST /v1/keys/{id}/verify`. */
export const VerifyAnswer = z.strictObject({ valid: z.boolean() });

/** `POST /v1/keys/{id}/jws`: the compact serialization. */
export const JwsAnswer = z.strictObject({ jws: z.string() });

/** `POST /v1/keys/{id}/jwt`. */
export const JwtAnswer = z.strictObject({ jwt: z.string() });

/** `GET /v1/wrapping-key`: the SPKI, base64, of the RSA key imports are wrapped to. */
export const WrappingKeyAnswer = z.strictObject({ publicKey: z.string() });

/** `GET /livez`. */
export const LiveAnswer = z.strictObject({ status: z.literal("ok") });

/** `GET /readyz` and `GET /healthz`: `signer` is the signer's mode. */
export const ReadyAnswer = z.strictObject({ status: z.literal("ok"), signer: z.string() });
