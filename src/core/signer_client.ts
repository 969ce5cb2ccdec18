/**
 * The one interface the host signs through, and its implementation over any message transport.
 *
 * A {@linkcode Transport} carries protocol bytes to a signer compartment: in the same isolate
 * (`inline.ts`), to a Worker isolate (`worker.ts`), or to a workerd service. (A key server in another process is reached
 * one level up, through the key-service RPC of `key_service_rpc.ts`.) The client turns
 * method calls into those bytes and statuses into {@linkcode KeycellError}s, so every transport
 * behaves the same to the host.
 *
 * @module
 */

import {
  ALGORITHM_CODES,
  decodeKeyList,
  decodeKeyRecord,
  decodeResponse,
  encodeRequest,
  encodeVerify,
  KEY_SPEC_CODES,
  KEY_ID_BYTES,
  KEY_ID_PATTERN,
  keyIdBytes,
  messageFlags,
  Op,
  Status,
  statusError,
} from "./protocol.ts";
import type { AlgorithmName, KeySpec, VerifyRequest } from "./protocol.ts";
export type { VerifyRequest } from "./protocol.ts";
import { KeycellError } from "./errors.ts";

/** A key as the host may see it: public parts only. */
export interface KeyInfo {
  id: string;
  keySpec: KeySpec;
  /** SubjectPublicKeyInfo DER. */
  publicKey: Uint8Array;
  /** The name whose version it is, when it is not a name of its own (its id). */
  name?: string;
}

/** One signing request, already validated. */
export interface SignRequest {
  keyId: string;
  algorithm: AlgorithmName;
  /** DIGEST: `message` is the digest. RAW: the guest hashes `message`. */
  messageType: "DIGEST" | "RAW";
  message: Uint8Array;
  /** ECDSA only: DER (default) or fixed-width `r || s`. */
  signatureFormat?: "DER" | "RAW";
}

/** What the host can ask of a signer. Every method rejects with a {@linkcode KeycellError}. */
export interface SignerClient {
  /** Which transport this is: `inline`, `worker` or `process`. */
  readonly mode: string;
  listKeys(): Promise<KeyInfo[]>;
  /** Rejects with `key_not_found` when no key has that id. */
  getKey(id: string): Promise<KeyInfo>;
  /** Returns the signature. */
  sign(request: SignRequest): Promise<Uint8Array>;
  /**
   * Whether `signature` is valid for the message under `publicKey`, checked by BoringSSL in the
   * guest. A malformed signature is `false`; an algorithm of the other family is `bad_request`.
   */
  verify(request: VerifyRequest): Promise<boolean>;
  /** Generates a key inside the guest. */
  generate(keySpec: KeySpec): Promise<KeyInfo>;
  /** Drops a key from the guest; its memory there is zeroed. */
  deleteKey(id: string): Promise<void>;
  /** Resolves when the guest answers. */
  health(): Promise<void>;
  /** Sends the guest a trap, for fault-injection tests; resolves with the compartment's error. */
  injectTrap(): Promise<KeycellError>;
  close(): Promise<void>;
}

/** Carries one protocol request to a compartment and brings back its response. */
export interface Transport {
  readonly mode: string;
  /** Never rejects for the guest's sake: failures come back as a response status. */
  request(request: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

/**
 * A {@linkcode SignerClient} over a {@linkcode Transport}.
 *
 * @example
 * ```ts
 * import { encodeKeyList, encodeResponse, Op, Status } from "./protocol.ts";
 * import { ProtocolSignerClient, type Transport } from "./signer_client.ts";
 *
 * // A transport to a guest that holds no keys; inline and worker transports carry real ones.
 * const empty: Transport = {
 *   mode: "example",
 *   request: (request) =>
 *     Promise.resolve(request[0] === Op.LIST ? encodeResponse(Status.OK, encodeKeyList([])) : encodeResponse(Status.BAD_OP)),
 *   close: () => Promise.resolve(),
 * };
 * const client = new ProtocolSignerClient(empty);
 * await client.listKeys(); // []
 * await client.close();
 * ```
 */
export class ProtocolSignerClient implements SignerClient {
  constructor(readonly transport: Transport) {}

  get mode(): string {
    return this.transport.mode;
  }

  async listKeys(): Promise<KeyInfo[]> {
    const list = decodeKeyList(await this.#call(Op.LIST));
    if (list === undefined) throw new KeycellError("internal", "the signer sent a malformed key list");
    return await this.getKeys(list.map((k) => k.id));
  }

  /** The public parts of listed keys, in order; a key dropped since it was listed is left out. */
  async getKeys(ids: readonly string[]): Promise<KeyInfo[]> {
    const keys: KeyInfo[] = [];
    for (const id of ids) {
      try {
        keys.push(await this.getKey(id));
      } catch (err) {
        if (!(err instanceof KeycellError && err.code === "key_not_found")) throw err;
      }
    }
    return keys;
  }

  async getKey(id: string): Promise<KeyInfo> {
    return toKeyInfo(await this.#call(Op.PUBLIC_KEY, idBytes(id)));
  }

  async sign(request: SignRequest): Promise<Uint8Array> {
    // The busiest request, so it is built in one allocation: op, key id, algorithm, flags, message.
    if (!KEY_ID_PATTERN.test(request.keyId)) throw new KeycellError("key_not_found", "no key with that id");
    const bytes = new Uint8Array(3 + KEY_ID_BYTES + request.message.length);
    bytes[0] = Op.SIGN;
    bytes.subarray(1, 1 + KEY_ID_BYTES).setFromHex(request.keyId);
    bytes[1 + KEY_ID_BYTES] = ALGORITHM_CODES[request.algorithm];
    bytes[2 + KEY_ID_BYTES] = messageFlags(request);
    bytes.set(request.message, 3 + KEY_ID_BYTES);
    return await this.#send(bytes);
  }

  async verify(request: VerifyRequest): Promise<boolean> {
    const body = encodeVerify(request);
    return body !== undefined && (await this.#call(Op.VERIFY, body))[0] === 1;
  }

  async generate(keySpec: KeySpec): Promise<KeyInfo> {
    return toKeyInfo(await this.#call(Op.GENERATE, new Uint8Array([KEY_SPEC_CODES[keySpec]])));
  }

  async deleteKey(id: string): Promise<void> {
    await this.#call(Op.DROP, idBytes(id));
  }

  async health(): Promise<void> {
    await this.#call(Op.HEALTH);
  }

  async injectTrap(): Promise<KeycellError> {
    try {
      await this.#call(Op.TRAP);
    } catch (err) {
      if (err instanceof KeycellError) return err;
      throw err;
    }
    throw new KeycellError("internal", "the guest did not trap");
  }

  close(): Promise<void> {
    return this.transport.close();
  }

  #call(op: Op, ...parts: Uint8Array[]): Promise<Uint8Array> {
    return this.#send(encodeRequest(op, ...parts));
  }

  async #send(request: Uint8Array): Promise<Uint8Array> {
    const { status, body } = decodeResponse(await this.transport.request(request));
    if (status === Status.OK) return body;
    throw statusError(status);
  }
}

function idBytes(id: string): Uint8Array {
  const bytes = keyIdBytes(id);
  if (bytes === undefined) throw new KeycellError("key_not_found", "no key with that id");
  return bytes;
}

function toKeyInfo(body: Uint8Array): KeyInfo {
  const record = decodeKeyRecord(body);
  if (record === undefined) throw new KeycellError("internal", "the signer sent a malformed key record");
  return { id: record.id, keySpec: record.keySpec, publicKey: record.spki };
}
