/**
 * keycell's one error type and the one table of its codes, shared by every layer: the HTTP status
 * and the Keyless SSL error each code answers with.
 *
 * Messages are written for the caller and never carry key material or guest internals.
 *
 * @module
 */

/**
 * The Keyless SSL wire error codes (the 1-byte payload of an `0xFF` response), as the protocol
 * numbers them.
 */
export const KeylessError = {
  NONE: 0,
  CRYPTO_FAILED: 1,
  KEY_NOT_FOUND: 2,
  READ_ERROR: 3,
  VERSION_MISMATCH: 4,
  BAD_OPCODE: 5,
  UNEXPECTED_OPCODE: 6,
  FORMAT: 7,
  INTERNAL: 8,
  CERT_NOT_FOUND: 9,
  EXPIRED: 10,
  REMOTE_CONFIGURATION: 11,
} as const;
/** One of {@linkcode KeylessError}. */
export type KeylessError = typeof KeylessError[keyof typeof KeylessError];

/**
 * Every way a keycell operation can fail, with its HTTP status and its Keyless SSL error.
 * Transient failures (the store, the signer) are `INTERNAL` on the Keyless wire, never
 * `KEY_NOT_FOUND`, so a client does not forget a key because a disk was slow.
 */
export const ERROR_CODES = {
  bad_request: { http: 400, keyless: KeylessError.FORMAT },
  unauthorized: { http: 401, keyless: KeylessError.INTERNAL },
  forbidden: { http: 403, keyless: KeylessError.INTERNAL },
  key_not_found: { http: 404, keyless: KeylessError.KEY_NOT_FOUND },
  not_found: { http: 404, keyless: KeylessError.BAD_OPCODE },
  /** A disabled key was asked to sign; an admin enables it again. A state, not a failure, so Keyless says "not found". */
  key_disabled: { http: 409, keyless: KeylessError.KEY_NOT_FOUND },
  /** A key scheduled for deletion was asked to sign, or changed; cancelling the deletion leaves it disabled. */
  key_pending_deletion: { http: 409, keyless: KeylessError.KEY_NOT_FOUND },
  /** A key was to be made under a name another key has. */
  key_name_taken: { http: 409, keyless: KeylessError.FORMAT },
  /** A route that exists, asked with a method it does not take; the answer's `Allow` lists those it does. */
  method_not_allowed: { http: 405, keyless: KeylessError.BAD_OPCODE },
  too_large: { http: 413, keyless: KeylessError.FORMAT },
  /** The request body did not arrive whole within the body deadline (KEYCELL_BODY_TIMEOUT_MS). */
  request_timeout: { http: 408, keyless: KeylessError.FORMAT },
  overloaded: { http: 429, keyless: KeylessError.INTERNAL },
  /** The token is over its own rate (tokens.json); the answer says when to retry. */
  rate_limited: { http: 429, keyless: KeylessError.INTERNAL },
  internal: { http: 500, keyless: KeylessError.INTERNAL },
  /** A stored key whose sealed blob does not open: corrupt, truncated, or sealed under another master key or id. */
  key_unusable: { http: 500, keyless: KeylessError.INTERNAL },
  signer_unavailable: { http: 503, keyless: KeylessError.INTERNAL },
  /**
   * No guest can take the request in time: it would wait, or has waited, longer than the queue's
   * bound (KEYCELL_MAX_QUEUE_WAIT_MS, KEYCELL_KEYSERVER_MAX_QUEUE_WAIT_MS), and is refused before
   * it reaches a guest; the answer says when to retry.
   */
  busy: { http: 503, keyless: KeylessError.INTERNAL },
} as const satisfies Record<string, { http: number; keyless: KeylessError }>;

/** One of {@linkcode ERROR_CODES}' names. */
export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * A failure with a code the caller can act on.
 *
 * @example
 * ```ts
 * import { KeycellError } from "./errors.ts";
 *
 * const err = new KeycellError("key_not_found", "no key with that id");
 * err.status; // 404
 * ```
 */
export class KeycellError extends Error {
  /**
   * @param retryAfterSeconds for `rate_limited`, `overloaded` and `busy`: when a retry would be allowed
   *   (the answer's `Retry-After`, whole seconds rounded up).
   * @param keyless the Keyless SSL error, where a guest status answers with another than
   *   {@linkcode ERROR_CODES}' for `code` (`STATUSES` in protocol.ts says which).
   */
  constructor(readonly code: ErrorCode, message: string, readonly retryAfterSeconds?: number, readonly keyless?: KeylessError) {
    super(message);
    this.name = "KeycellError";
  }

  /** The Keyless SSL error this error answers with. */
  get keylessError(): KeylessError {
    return this.keyless ?? ERROR_CODES[this.code].keyless;
  }

  /** The HTTP status this error answers with. */
  get status(): (typeof ERROR_CODES)[ErrorCode]["http"] {
    return ERROR_CODES[this.code].http;
  }

  /** The JSON body keycell answers with: `{error: {code, message}}`. */
  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/**
 * The Keyless SSL error any failure answers with: a {@linkcode KeycellError}'s own, and
 * `INTERNAL` for anything else (a failure nobody typed is transient, never "not found").
 *
 * @example
 * ```ts
 * import { KeycellError, keylessErrorOf, KeylessError } from "./errors.ts";
 *
 * keylessErrorOf(new KeycellError("key_not_found", "no key with that id")) === KeylessError.KEY_NOT_FOUND; // true
 * keylessErrorOf(new Error("disk full")) === KeylessError.INTERNAL; // true
 * ```
 */
export function keylessErrorOf(err: unknown): KeylessError {
  return err instanceof KeycellError ? err.keylessError : KeylessError.INTERNAL;
}
