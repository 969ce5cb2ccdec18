/**
 * A small typed client of keycell's HTTP API, for scripts, the command line and the tests. It
 * speaks only HTTP (`fetch`), so it runs wherever the caller does; failures are the server's own
 * {@linkcode KeycellError}s, or `signer_unavailable` when the server cannot be reached.
 *
 * @module
 */

import type { AlgorithmName, KeySpec } from "../core/algorithms.ts";
import { ERROR_CODES, type ErrorCode, KeycellError } from "../core/errors.ts";
import { VERSION } from "../core/version.ts";

/** A key as the API describes it. */
export interface Key {
  /** Lowercase hex SHA-256 of the SubjectPublicKeyInfo DER. */
  id: string;
  keySpec: KeySpec;
  /** SubjectPublicKeyInfo DER. */
  publicKey: Uint8Array;
  /** The name whose version it is, when that is not its own id. */
  name?: string;
}

/** Where a named key is in its life: it signs only while `enabled`. */
export type KeyState = "enabled" | "disabled" | "pending_deletion";

/**
 * A named key as `GET /v1/keys/{name}` shows it: the key the name (its primary) or id stands
 * for, and the name's versions, state and metadata. Times are ISO 8601.
 */
export interface KeyDetails extends Key {
  name: string;
  state: KeyState;
  /** The id of the version that signs for the name. */
  primary: string;
  versions: { id: string; version: number; created?: string }[];
  created?: string;
  description?: string;
  labels?: Record<string, string>;
  /** `pending_deletion` only: when the key will be deleted. */
  deletionDate?: string;
}

/** What a new key may be given besides its spec; without a name, its id names it. */
export interface CreateKeyOptions {
  /** Also publish it in `/.well-known/jwks.json`. */
  jwks?: boolean;
  name?: string;
  description?: string;
  labels?: Record<string, string>;
}

/** What to sign. */
export interface SignOptions {
  algorithm: AlgorithmName;
  /** `RAW` (the server hashes it, the default) or `DIGEST` (already the hash). */
  messageType?: "RAW" | "DIGEST";
  message: Uint8Array;
  /** ECDSA only: `DER` (default) or `RAW` (`r || s`, as JWS uses). */
  signatureFormat?: "DER" | "RAW";
}

/** What to check: a {@linkcode SignOptions} and the signature (DER or, for ECDSA, `r || s` as `signatureFormat` says). */
export interface VerifyOptions extends SignOptions {
  signature: Uint8Array;
}

/** One item of {@linkcode KeycellClient.signBatch}'s answer: its signature, or the error it alone failed with. */
export type BatchItem = { signature: Uint8Array } | { error: KeycellError };

/** A public key as a JWK, as the API sends it (`kid` is the key id). */
export interface PublicJwk {
  kty: "EC" | "RSA";
  kid: string;
  use: "sig";
  alg?: string;
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
}

/**
 * Calls one keycell server with one token.
 *
 * @example
 * ```ts
 * import { KeycellClient } from "./client.ts";
 *
 * const keycell = new KeycellClient({ url: "http://127.0.0.1:8787", token: "..." });
 * async function demo() {
 *   const key = await keycell.createKey("ECC_NIST_P256");
 *   const signature = await keycell.sign(key.id, { algorithm: "ECDSA_SHA_256", message: new TextEncoder().encode("hi") });
 *   return signature;
 * }
 * ```
 */
export class KeycellClient {
  readonly #url: string;
  readonly #token?: string;
  readonly #fetch: typeof fetch;

  /**
   * @param options.url the server's base URL, such as `http://127.0.0.1:8787`.
   * @param options.token a bearer token (every route but the probes and `/.well-known/jwks.json` needs one).
   * @param options.fetch the fetch to use (tests pass an app's own).
   */
  constructor(options: { url: string; token?: string; fetch?: typeof fetch }) {
    this.#url = options.url.replace(/\/+$/, "");
    this.#token = options.token;
    this.#fetch = options.fetch ?? fetch;
  }

  /** Every key the token may use, page after page. */
  async listKeys(): Promise<Key[]> {
    const keys: Key[] = [];
    let cursor: string | undefined;
    do {
      const query = new URLSearchParams({ limit: "1000", ...(cursor ? { cursor } : {}) });
      const page = await this.#json<{ keys: KeyJson[]; nextCursor?: string }>("GET", `/v1/keys?${query}`);
      keys.push(...page.keys.map(toKey));
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    return keys;
  }

  /** One key. */
  async getKey(id: string): Promise<Key> {
    return toKey(await this.#json("GET", `/v1/keys/${encodeURIComponent(id)}`));
  }

  /**
   * A key generated inside the server's guest, under `options.name` (else its id), with its
   * description and labels; with `jwks`, published in the server's JWKS at once.
   */
  async createKey(keySpec: KeySpec, options: CreateKeyOptions = {}): Promise<Key> {
    const { jwks, ...metadata } = options;
    return toKey(await this.#json("POST", "/v1/keys", { keySpec, ...(jwks ? { jwks: true } : {}), ...metadata }));
  }

  /** A named key (by name, or by a version's id): its versions, state and metadata. */
  async describeKey(ref: string): Promise<KeyDetails> {
    return toDetails(await this.#json("GET", `/v1/keys/${encodeURIComponent(ref)}`));
  }

  /** Makes a new version of a named key inside the guest (the same spec) and makes it primary; every older one stays. */
  async rotateKey(ref: string): Promise<KeyDetails> {
    return await this.#change(ref, "rotate");
  }

  /** Stops a key, every version of it, from signing until {@linkcode enableKey}. */
  async disableKey(ref: string): Promise<KeyDetails> {
    return await this.#change(ref, "disable");
  }

  async enableKey(ref: string): Promise<KeyDetails> {
    return await this.#change(ref, "enable");
  }

  /** Deletes a key after `pendingWindowDays` (7 to 30; the server's default is 30); it signs no more meanwhile. */
  async scheduleKeyDeletion(ref: string, pendingWindowDays?: number): Promise<KeyDetails> {
    return await this.#change(ref, "schedule-deletion", pendingWindowDays === undefined ? {} : { pendingWindowDays });
  }

  /** Keeps a key scheduled for deletion; it is then disabled, as AWS KMS leaves it. */
  async cancelKeyDeletion(ref: string): Promise<KeyDetails> {
    return await this.#change(ref, "cancel-deletion");
  }

  async #change(ref: string, change: string, body?: unknown): Promise<KeyDetails> {
    return toDetails(await this.#json("POST", `/v1/keys/${encodeURIComponent(ref)}/${change}`, body));
  }

  /** A key's public key alone, as a JWK. */
  async getJwk(id: string): Promise<PublicJwk> {
    return await this.#json<PublicJwk>("GET", `/v1/keys/${encodeURIComponent(id)}?format=jwk`);
  }

  /** Publishes a key in `/.well-known/jwks.json` (`on`), or stops publishing it. */
  async setJwks(id: string, on: boolean): Promise<void> {
    await this.#request(on ? "PUT" : "DELETE", `/v1/keys/${encodeURIComponent(id)}/jwks`);
  }

  /** The server's published keys, `/.well-known/jwks.json` (no token needed). */
  async jwks(): Promise<{ keys: PublicJwk[] }> {
    return await this.#json<{ keys: PublicJwk[] }>("GET", "/.well-known/jwks.json");
  }

  /**
   * Deletes a key (a name: every version of it) everywhere, at once. {@linkcode scheduleKeyDeletion}
   * deletes it after a waiting period instead.
   */
  async deleteKey(ref: string): Promise<void> {
    await this.#request("DELETE", `/v1/keys/${encodeURIComponent(ref)}?immediately=true`);
  }

  /** The signature. */
  async sign(ref: string, options: SignOptions): Promise<Uint8Array> {
    return (await this.signWithKeyId(ref, options)).signature;
  }

  /** The signature, and the id of the key that made it (a name signs with its primary version). */
  async signWithKeyId(ref: string, options: SignOptions): Promise<{ keyId: string; signature: Uint8Array }> {
    const answer = await this.#json<{ keyId: string; signature: string }>("POST", `/v1/keys/${encodeURIComponent(ref)}/sign`, signBody(options));
    return { keyId: answer.keyId, signature: Uint8Array.fromBase64(answer.signature) };
  }

  /**
   * Up to 100 signatures with one key in one request; each item succeeds or fails alone, and the
   * answer keeps the items' order.
   */
  async signBatch(id: string, items: readonly SignOptions[]): Promise<BatchItem[]> {
    const answer = await this.#json<{ results: ({ signature: string } | { error: { code: string; message: string } })[] }>(
      "POST",
      `/v1/keys/${encodeURIComponent(id)}/sign-batch`,
      { batch: items.map(signBody) },
    );
    return answer.results.map((r) => "signature" in r ? { signature: Uint8Array.fromBase64(r.signature) } : { error: errorFrom(r.error) });
  }

  /** Whether the key's public key verifies `signature` over the message (checked by the server, without the guest). */
  async verify(id: string, options: VerifyOptions): Promise<boolean> {
    const body = { ...signBody(options), signature: options.signature.toBase64() };
    return (await this.#json<{ valid: boolean }>("POST", `/v1/keys/${encodeURIComponent(id)}/verify`, body)).valid;
  }

  /**
   * A compact JWS over `payload` (bytes, or text taken as UTF-8). `protectedHeader.alg` is required
   * (`ES256`, `RS256`, `PS256`, ...); `kid` defaults to the key id.
   */
  async jws(id: string, protectedHeader: Record<string, unknown> & { alg: string }, payload: Uint8Array | string): Promise<string> {
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    const body = { protectedHeader, payload: bytes.toBase64({ alphabet: "base64url", omitPadding: true }) };
    return (await this.#json<{ jws: string }>("POST", `/v1/keys/${encodeURIComponent(id)}/jws`, body)).jws;
  }

  /**
   * A signed JWT of `claims`, with `iat` set by the server and `exp` by `expiresIn` (seconds).
   * `alg` defaults to the key's (`ES256` for P-256, `ES384` for P-384, `RS256` for RSA).
   */
  async jwt(id: string, claims: Record<string, unknown>, options: { expiresIn?: number; alg?: string } = {}): Promise<string> {
    const body = { claims, ...(options.expiresIn !== undefined ? { expiresIn: options.expiresIn } : {}), ...(options.alg ? { alg: options.alg } : {}) };
    return (await this.#json<{ jwt: string }>("POST", `/v1/keys/${encodeURIComponent(id)}/jwt`, body)).jwt;
  }

  /** The SPKI DER of the server's RSA-4096 wrapping key, for {@linkcode KeycellClient.importWrapped}. */
  async wrappingKey(): Promise<Uint8Array> {
    return Uint8Array.fromBase64((await this.#json<{ publicKey: string }>("GET", "/v1/wrapping-key")).publicKey);
  }

  /** Imports a key wrapped to {@linkcode KeycellClient.wrappingKey}. */
  async importWrapped(keySpec: KeySpec, wrappedKey: Uint8Array): Promise<Key> {
    return toKey(await this.#json("POST", "/v1/keys/import", { keySpec, wrappedKey: wrappedKey.toBase64() }));
  }

  /** Resolves when the server and its signer answer. */
  async health(): Promise<void> {
    await this.#request("GET", "/healthz");
  }

  async #json<T>(method: string, path: string, body?: unknown): Promise<T> {
    return await (await this.#request(method, path, body)).json() as T;
  }

  async #request(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { "User-Agent": `keycell-client/${VERSION}` };
    if (this.#token !== undefined) headers.Authorization = `Bearer ${this.#token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res: Response;
    try {
      res = await this.#fetch(`${this.#url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new KeycellError("signer_unavailable", `cannot reach keycell at ${this.#url}: ${(err as Error).message}`);
    }
    if (res.ok) return res;
    throw await errorOf(res);
  }
}

/** A key as the API sends it. */
interface KeyJson {
  id: string;
  keySpec: KeySpec;
  publicKey: string;
  name?: string;
}

function toKey(key: KeyJson): Key {
  return { id: key.id, keySpec: key.keySpec, publicKey: Uint8Array.fromBase64(key.publicKey), ...(key.name !== undefined ? { name: key.name } : {}) };
}

function toDetails(key: Omit<KeyDetails, "publicKey"> & { publicKey: string }): KeyDetails {
  return { ...key, publicKey: Uint8Array.fromBase64(key.publicKey) };
}

/** A sign body as the API takes it. */
function signBody(options: SignOptions): Record<string, string> {
  return {
    algorithm: options.algorithm,
    messageType: options.messageType ?? "RAW",
    message: options.message.toBase64(),
    ...(options.signatureFormat ? { signatureFormat: options.signatureFormat } : {}),
  };
}

/** The {@linkcode KeycellError} of an error object; a code this client does not know is `internal`. */
function errorFrom(error: { code: string; message: string }): KeycellError {
  return error.code in ERROR_CODES ? new KeycellError(error.code as ErrorCode, error.message) : new KeycellError("internal", error.message);
}

/** The server's `{error: {code, message}}`, or what the status says when the body is not that. */
async function errorOf(res: Response): Promise<KeycellError> {
  const retryAfter = Number(res.headers.get("Retry-After")) || undefined;
  try {
    const { error } = await res.json() as { error: { code: string; message: string } };
    if (error.code in ERROR_CODES) return new KeycellError(error.code as ErrorCode, error.message, retryAfter);
  } catch {
    // Not keycell's error shape: described by its status below.
  }
  const code = (Object.entries(ERROR_CODES).find(([, e]) => e.http === res.status)?.[0] ?? "internal") as ErrorCode;
  return new KeycellError(code, `HTTP ${res.status} ${res.statusText}`.trim(), retryAfter);
}
