/**
 * keycell's one error type, and its one mapping to HTTP.
 *
 * Messages are written for the caller and never carry key material or guest internals.
 *
 * @module
 */

/** Every way a keycell operation can fail. */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "key_not_found"
  | "not_found"
  | "method_not_allowed"
  | "too_large"
  | "overloaded"
  | "rate_limited"
  | "signer_unavailable"
  | "key_unusable"
  | "internal";

/** The HTTP status of each {@linkcode ErrorCode}. */
export const HTTP_STATUS = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  key_not_found: 404,
  not_found: 404,
  /** A route that exists, asked with a method it does not take; the answer's `Allow` lists those it does. */
  method_not_allowed: 405,
  too_large: 413,
  overloaded: 429,
  /** The token is over its own rate (tokens.json); the answer says when to retry. */
  rate_limited: 429,
  internal: 500,
  signer_unavailable: 503,
  /** A stored key whose sealed blob does not open: corrupt, truncated, or sealed under another master key or id. */
  key_unusable: 500,
} as const satisfies Record<ErrorCode, number>;

/**
 * A failure with a code the caller can act on.
 *
 * @example
 * ```ts
 * throw new KeycellError("key_not_found", "no key with that id");
 * ```
 */
export class KeycellError extends Error {
  /**
   * @param retryAfterSeconds for `rate_limited`: when a retry would be allowed (the answer's
   *   `Retry-After`, whole seconds rounded up).
   */
  constructor(readonly code: ErrorCode, message: string, readonly retryAfterSeconds?: number) {
    super(message);
    this.name = "KeycellError";
  }

  /** The JSON body keycell answers with: `{error: {code, message}}`. */
  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}
