/**
 * The key-service RPC: a {@linkcode KeyService} called across a process boundary (`process` mode's
 * key server on its Unix socket), method and body in, result or typed error out. The same
 * service answers the HTTP app in-process; over the RPC a caller gets exactly the errors it would
 * have got in-process (`key_not_found` stays `key_not_found`, a store that is down stays
 * `signer_unavailable`).
 *
 * Request: `method (1) || body`. Response: `0 || result`, or `1 || {"code", "message"}` (JSON).
 * Bodies are JSON, bytes in base64 (the JWKS set: `[id, ...]` out, `{"id", "on"}` in; a key's
 * metadata `{"keySpec", "metadata"}` in; a change `{"ref", "change"}` in), but for
 * signing, the busiest call, which is binary both ways: `key id (32) || algorithm code || flags ||
 * message` in, the signature out; and verifying, the guest's VERIFY body in (`encodeVerify`), one
 * byte out.
 *
 * @module
 */

import { ALGORITHM_CODES, KEY_SPEC_CODES, KEY_SPECS, type KeySpec } from "./algorithms.ts";
import { ERROR_CODES, type ErrorCode, KeycellError, type KeylessError } from "./errors.ts";
import type { KeyPage } from "./key_store.ts";
import { type KeyChange, type KeyDetails, type KeyMetadata, type KeyService, type ListOptions, listAllKeys } from "./key_service.ts";
import {
  ALGORITHM_BY_CODE,
  decodeVerify,
  encodeVerify,
  FLAG_ECDSA_RAW_SIGNATURE,
  FLAG_RAW_MESSAGE,
  KEY_ID_BYTES,
  KEY_ID_PATTERN,
  messageFlags,
  SPEC_BY_CODE,
  toHex,
  type VerifyRequest,
} from "./protocol.ts";
import type { SealedKeys } from "./sealed_keys.ts";
import type { KeyInfo, SignerClient, SignRequest } from "./signer_client.ts";
import { getLog } from "./log.ts";

const log = getLog();

/** The RPC's methods, one per {@linkcode KeyService} method. */
export const Method = {
  LIST_PAGE: 1,
  GET_KEY: 2,
  GENERATE: 3,
  IMPORT_WRAPPED: 4,
  WRAPPING_KEY: 5,
  DELETE_KEY: 6,
  SIGN: 7,
  HEALTH: 8,
  INJECT_TRAP: 9,
  JWKS_KEY_IDS: 10,
  SET_JWKS: 11,
  DESCRIBE_KEY: 12,
  RESOLVE_KEY: 13,
  CHANGE_KEY: 14,
  VERIFY: 15,
} as const;
/** One of {@linkcode Method}. */
export type Method = typeof Method[keyof typeof Method];

const OK = 0;
const FAILED = 1;
const text = new TextEncoder();
const untext = new TextDecoder();

/** A key as JSON: its SPKI in base64. */
interface KeyJson {
  id: string;
  keySpec: KeySpec;
  publicKey: string;
  name?: string;
}

const keyJson = (key: KeyInfo): KeyJson => ({ ...key, publicKey: key.publicKey.toBase64() });
const keyInfo = (key: KeyJson): KeyInfo => ({ ...key, publicKey: Uint8Array.fromBase64(key.publicKey) });
const json = (value: unknown): Uint8Array => text.encode(JSON.stringify(value));
const parse = <T>(body: Uint8Array): T => JSON.parse(untext.decode(body));

/**
 * Answers RPC requests from a {@linkcode KeyService}. Never rejects: every failure is a typed
 * error response, and an unexpected one is `internal` without its details.
 *
 * @example
 * ```ts
 * import { keyServiceHandler, Method, RemoteKeyService } from "./key_service_rpc.ts";
 * import type { KeyService } from "./key_service.ts";
 *
 * declare const service: KeyService;
 * const handle = keyServiceHandler(service);
 * const remote = new RemoteKeyService(handle); // the same service, through the RPC's bytes
 * ```
 */
export function keyServiceHandler(service: KeyService): (request: Uint8Array) => Promise<Uint8Array> {
  return async (request) => {
    try {
      return ok(await dispatch(service, request[0], request.subarray(1)));
    } catch (err) {
      if (err instanceof KeycellError) return failed(err);
      if (err instanceof SyntaxError || err instanceof TypeError) return failed(new KeycellError("bad_request", "malformed key service request"));
      log.error(`key service request failed: ${(err as Error).message}`);
      return failed(new KeycellError("internal", "the key service failed on this request"));
    }
  };
}

async function dispatch(service: KeyService, method: number, body: Uint8Array): Promise<Uint8Array> {
  switch (method) {
    case Method.LIST_PAGE: {
      const { limit, cursor, ids } = parse<{ limit: number; cursor?: string; ids?: string[] }>(body);
      const page = await service.listPage({ limit, cursor, ...(ids ? { ids: new Set(ids) } : {}) });
      return json({ keys: page.keys.map(keyJson), nextCursor: page.nextCursor });
    }
    case Method.GET_KEY:
      return json(keyJson(await service.getKey(untext.decode(body))));
    case Method.GENERATE: {
      const { keySpec, metadata } = parse<{ keySpec: string; metadata?: KeyMetadata }>(body);
      return json(keyJson(await service.generate(keySpecOf(keySpec), metadataOf(metadata))));
    }
    case Method.IMPORT_WRAPPED: {
      // `spec code || metadata length (u32 BE) || metadata JSON || wrapped key`
      const spec = SPEC_BY_CODE.get(body[0]);
      if (spec === undefined || body.length < 5) throw new KeycellError("bad_request", "unknown key spec");
      const length = new DataView(body.buffer, body.byteOffset).getUint32(1);
      const metadata = metadataOf(parse<KeyMetadata>(body.subarray(5, 5 + length)));
      return json(keyJson(await service.importWrapped(spec, body.slice(5 + length), metadata)));
    }
    case Method.DESCRIBE_KEY:
      return json(detailsJson(await service.describeKey(untext.decode(body))));
    case Method.RESOLVE_KEY: {
      const { ref, use } = parse<{ ref: unknown; use: unknown }>(body);
      if (typeof ref !== "string" || (use !== "sign" && use !== "read")) throw new KeycellError("bad_request", "malformed key reference");
      return text.encode(await service.resolveKey(ref, use));
    }
    case Method.CHANGE_KEY: {
      const { ref, change } = parse<{ ref: unknown; change: KeyChange }>(body);
      if (typeof ref !== "string" || typeof change?.action !== "string") throw new KeycellError("bad_request", "malformed key change");
      return json(detailsJson(await service.changeKey(ref, change)));
    }
    case Method.WRAPPING_KEY: {
      const { id, spki } = await service.wrappingKey();
      return json({ id, spki: spki.toBase64() });
    }
    case Method.DELETE_KEY:
      await service.deleteKey(untext.decode(body));
      return new Uint8Array();
    case Method.JWKS_KEY_IDS:
      return json(await service.jwksKeyIds());
    case Method.SET_JWKS: {
      const { id, on } = parse<{ id: unknown; on: unknown }>(body);
      if (typeof id !== "string" || typeof on !== "boolean") throw new KeycellError("bad_request", "malformed JWKS mark");
      if (!KEY_ID_PATTERN.test(id)) throw new KeycellError("key_not_found", "no key with that id");
      await service.setJwks(id, on);
      return new Uint8Array();
    }
    case Method.SIGN:
      return await service.sign(decodeSign(body));
    case Method.VERIFY: {
      const request = decodeVerify(body);
      if (request === undefined) throw new KeycellError("bad_request", "malformed verify request");
      return Uint8Array.of(await service.verify(request) ? 1 : 0);
    }
    case Method.HEALTH:
      await service.health();
      return new Uint8Array();
    case Method.INJECT_TRAP: {
      const err = await service.injectTrap();
      return json({ code: err.code, message: err.message });
    }
    default:
      throw new KeycellError("bad_request", `unknown key service method ${method}`);
  }
}

/** Metadata as it crossed: an object, checked by the service. */
function metadataOf(metadata: KeyMetadata | undefined): KeyMetadata {
  if (metadata === undefined || metadata === null) return {};
  if (typeof metadata !== "object") throw new KeycellError("bad_request", "malformed key metadata");
  return metadata;
}

/** A named key as JSON: its SPKI in base64. */
type DetailsJson = Omit<KeyDetails, "publicKey"> & { publicKey: string };
const detailsJson = (key: KeyDetails): DetailsJson => ({ ...key, publicKey: key.publicKey.toBase64() });
const details = (key: DetailsJson): KeyDetails => ({ ...key, publicKey: Uint8Array.fromBase64(key.publicKey) });

function keySpecOf(name: string): KeySpec {
  if (!(name in KEY_SPECS)) throw new KeycellError("bad_request", "unknown key spec");
  return name as KeySpec;
}

/** `key id (32) || algorithm code || flags || message`, the guest's own layout. */
function encodeSign(request: SignRequest): Uint8Array {
  if (!KEY_ID_PATTERN.test(request.keyId)) throw new KeycellError("key_not_found", "no key with that id");
  const out = new Uint8Array(KEY_ID_BYTES + 2 + request.message.length);
  out.subarray(0, KEY_ID_BYTES).setFromHex(request.keyId);
  out[KEY_ID_BYTES] = ALGORITHM_CODES[request.algorithm];
  out[KEY_ID_BYTES + 1] = messageFlags(request);
  out.set(request.message, KEY_ID_BYTES + 2);
  return out;
}

function decodeSign(body: Uint8Array): SignRequest {
  const algorithm = ALGORITHM_BY_CODE.get(body[KEY_ID_BYTES]);
  if (body.length < KEY_ID_BYTES + 2 || algorithm === undefined) throw new KeycellError("bad_request", "malformed sign request");
  const flags = body[KEY_ID_BYTES + 1];
  const request: SignRequest = {
    keyId: toHex(body.subarray(0, KEY_ID_BYTES)),
    algorithm,
    messageType: flags & FLAG_RAW_MESSAGE ? "RAW" : "DIGEST",
    message: body.slice(KEY_ID_BYTES + 2),
  };
  if (flags & FLAG_ECDSA_RAW_SIGNATURE) request.signatureFormat = "RAW";
  return request;
}

function ok(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + body.length);
  out[0] = OK;
  out.set(body, 1);
  return out;
}

/**
 * The response that carries an error, for a caller that answers for the service (a key server
 * refusing a request it has no room for).
 *
 * @example
 * ```ts
 * import { KeycellError } from "./errors.ts";
 * import { failureResponse } from "./key_service_rpc.ts";
 *
 * const busy = failureResponse(new KeycellError("signer_unavailable", "the key server is busy"));
 * busy[0]; // 1: an error follows
 * ```
 */
export function failureResponse(err: KeycellError): Uint8Array {
  return failed(err);
}

function failed(err: KeycellError): Uint8Array {
  const body = json({ code: err.code, message: err.message, retryAfterSeconds: err.retryAfterSeconds, keyless: err.keyless });
  const out = new Uint8Array(1 + body.length);
  out[0] = FAILED;
  out.set(body, 1);
  return out;
}

/** The {@linkcode KeycellError} an error body stands for; a code this side does not know is `internal`. */
function errorOf(body: Uint8Array): KeycellError {
  const { code, message, retryAfterSeconds, keyless } = parse<{ code: string; message: string; retryAfterSeconds?: number; keyless?: KeylessError }>(body);
  return code in ERROR_CODES
    ? new KeycellError(code as ErrorCode, message, retryAfterSeconds, keyless)
    : new KeycellError("internal", "the key service answered an unknown error");
}

/**
 * A {@linkcode KeyService} in another process: each call is one RPC request through `call`,
 * which carries the bytes there and back (and rejects only for the transport's sake, which is
 * `signer_unavailable` here). It is also the HTTP app's {@linkcode SignerClient} and
 * {@linkcode SealedKeys}, so `serve` in `process` mode has every route the other modes have.
 *
 * @example
 * ```ts
 * import { keyServiceHandler, RemoteKeyService } from "./key_service_rpc.ts";
 * import type { KeyService } from "./key_service.ts";
 *
 * declare const local: KeyService;
 * const remote = new RemoteKeyService(keyServiceHandler(local));
 * ```
 */
export class RemoteKeyService implements KeyService, SignerClient, SealedKeys {
  readonly #call: (request: Uint8Array) => Promise<Uint8Array>;
  readonly #close: () => Promise<void>;

  /**
   * @param call carries one request and resolves with its response.
   * @param close ends the connection.
   */
  constructor(call: (request: Uint8Array) => Promise<Uint8Array>, close: () => Promise<void> = () => Promise.resolve(), readonly mode = "process") {
    this.#call = call;
    this.#close = close;
  }

  async listPage(options: ListOptions): Promise<KeyPage> {
    const { limit, cursor, ids } = options;
    const page = parse<{ keys: KeyJson[]; nextCursor?: string }>(
      await this.#request(Method.LIST_PAGE, json({ limit, cursor, ...(ids ? { ids: [...ids] } : {}) })),
    );
    return { keys: page.keys.map(keyInfo), ...(page.nextCursor !== undefined ? { nextCursor: page.nextCursor } : {}) };
  }

  /** Every key, page by page; for small key sets ({@linkcode listPage} pages through large ones). */
  async listKeys(): Promise<KeyInfo[]> {
    return await listAllKeys(this);
  }

  async getKey(id: string): Promise<KeyInfo> {
    if (!KEY_ID_PATTERN.test(id)) throw new KeycellError("key_not_found", "no key with that id");
    return keyInfo(parse(await this.#request(Method.GET_KEY, text.encode(id))));
  }

  async generate(keySpec: KeySpec, metadata: KeyMetadata = {}): Promise<KeyInfo> {
    return keyInfo(parse(await this.#request(Method.GENERATE, json({ keySpec, metadata }))));
  }

  async importWrapped(keySpec: KeySpec, wrapped: Uint8Array, metadata: KeyMetadata = {}): Promise<KeyInfo> {
    const meta = json(metadata);
    const body = new Uint8Array(5 + meta.length + wrapped.length);
    body[0] = KEY_SPEC_CODES[keySpec];
    new DataView(body.buffer).setUint32(1, meta.length);
    body.set(meta, 5);
    body.set(wrapped, 5 + meta.length);
    return keyInfo(parse(await this.#request(Method.IMPORT_WRAPPED, body)));
  }

  async describeKey(ref: string): Promise<KeyDetails> {
    return details(parse(await this.#request(Method.DESCRIBE_KEY, text.encode(ref))));
  }

  async resolveKey(ref: string, use: "sign" | "read"): Promise<string> {
    // An id stands for itself: no round trip.
    if (KEY_ID_PATTERN.test(ref)) return ref;
    return untext.decode(await this.#request(Method.RESOLVE_KEY, json({ ref, use })));
  }

  async changeKey(ref: string, change: KeyChange): Promise<KeyDetails> {
    return details(parse(await this.#request(Method.CHANGE_KEY, json({ ref, change }))));
  }

  async wrappingKey(): Promise<{ id: string; spki: Uint8Array }> {
    const { id, spki } = parse<{ id: string; spki: string }>(await this.#request(Method.WRAPPING_KEY));
    return { id, spki: Uint8Array.fromBase64(spki) };
  }

  async deleteKey(ref: string): Promise<void> {
    await this.#request(Method.DELETE_KEY, text.encode(ref));
  }

  async jwksKeyIds(): Promise<string[]> {
    return parse<string[]>(await this.#request(Method.JWKS_KEY_IDS));
  }

  async setJwks(id: string, on: boolean): Promise<void> {
    if (!KEY_ID_PATTERN.test(id)) throw new KeycellError("key_not_found", "no key with that id");
    await this.#request(Method.SET_JWKS, json({ id, on }));
  }

  sign(request: SignRequest): Promise<Uint8Array> {
    return this.#request(Method.SIGN, encodeSign(request));
  }

  async verify(request: VerifyRequest): Promise<boolean> {
    const body = encodeVerify(request);
    return body !== undefined && (await this.#request(Method.VERIFY, body))[0] === 1;
  }

  async health(): Promise<void> {
    await this.#request(Method.HEALTH);
  }

  async injectTrap(): Promise<KeycellError> {
    return errorOf(await this.#request(Method.INJECT_TRAP));
  }

  close(): Promise<void> {
    return this.#close();
  }

  async #request(method: Method, body: Uint8Array = new Uint8Array()): Promise<Uint8Array> {
    const request = new Uint8Array(1 + body.length);
    request[0] = method;
    request.set(body, 1);
    let response: Uint8Array;
    try {
      response = await this.#call(request);
    } catch (err) {
      if (err instanceof KeycellError) throw err;
      throw new KeycellError("signer_unavailable", "the key server is not available");
    }
    if (response[0] === OK) return response.subarray(1);
    if (response[0] === FAILED) throw errorOf(response.subarray(1));
    throw new KeycellError("internal", "the key server sent a malformed answer");
  }
}
