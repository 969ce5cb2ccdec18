/**
 * The sealed-key routes (paged listing, the wrapping key, wrapped import) in `process` mode, where
 * the key store belongs to the key server: each becomes one {@linkcode StoreOp} request over the
 * same transport as signing, answered by the key server from its store and guest.
 *
 * @module
 */

import {
  decodeKeyList,
  decodeKeyRecord,
  KEY_ID_BYTES,
  KEY_SPEC_CODES,
  keyIdBytes,
  type KeySpec,
  StoreOp,
  toHex,
} from "../core/protocol.ts";
import { KeycellError } from "../core/errors.ts";
import { type KeyPage, type ListOptions, pageOf } from "../core/key_store.ts";
import type { KeyInfo, ProtocolSignerClient } from "../core/signer_client.ts";
import { type SealedKeys, sealingCall } from "../core/sealed_keys.ts";

/**
 * {@linkcode SealedKeys} served by a key server.
 *
 * @example
 * ```ts
 * import { KeyServerKeys } from "./keyserver_keys.ts";
 * import { startSigner } from "./signer.ts";
 *
 * async function firstPage(wasm: Uint8Array) {
 *   const { client } = await startSigner("process", { wasm });
 *   return await new KeyServerKeys(client).listPage({ limit: 100 });
 * }
 * ```
 */
export class KeyServerKeys implements SealedKeys {
  readonly #signer: ProtocolSignerClient;

  /** `signer` is the key server's client; its transport carries the store requests. */
  constructor(signer: ProtocolSignerClient) {
    this.#signer = signer;
  }

  /** One page of the key server's stored keys, in id order. */
  async listPage({ limit, cursor, ids }: ListOptions): Promise<KeyPage> {
    if (ids !== undefined) return await this.#pageAmong(ids, limit, cursor);
    const head = new Uint8Array([limit & 0xff, limit >> 8]);
    const body = await this.#call(StoreOp.LIST_PAGE, head, cursor === undefined ? new Uint8Array() : keyIdBytes(cursor)!);
    const hasNext = body[0] === 1;
    const list = decodeKeyList(body.subarray(hasNext ? 1 + KEY_ID_BYTES : 1));
    if (list === undefined) throw new KeycellError("internal", "the key server sent a malformed key list");
    const keys = await this.#signer.getKeys(list.map((k) => k.id));
    return { keys, ...(hasNext ? { nextCursor: toHex(body.subarray(1, 1 + KEY_ID_BYTES)) } : {}) };
  }

  /** The key server's RSA-4096 wrapping key. */
  async wrappingKey(): Promise<{ id: string; spki: Uint8Array }> {
    const { id, spki } = this.#record(await this.#call(StoreOp.WRAPPING_KEY));
    return { id, spki };
  }

  /** Imports a key wrapped to {@linkcode wrappingKey}; it is unwrapped only in the key server's guest. */
  async importWrapped(keySpec: KeySpec, wrapped: Uint8Array): Promise<KeyInfo> {
    const { id, spki } = this.#record(await this.#call(StoreOp.IMPORT_WRAPPED, new Uint8Array([KEY_SPEC_CODES[keySpec]]), wrapped));
    return { id, keySpec, publicKey: spki };
  }

  /** A page of the keys among `ids`, asked for one by one: the key server's page takes no id set. */
  async #pageAmong(ids: ReadonlySet<string>, limit: number, cursor?: string): Promise<KeyPage> {
    const after = [...ids].filter((id) => cursor === undefined || id > cursor).sort();
    const keys: KeyInfo[] = [];
    // One more than the page, to learn whether there is a next page.
    for (let at = 0; at < after.length && keys.length <= limit;) {
      const wanted = limit + 1 - keys.length;
      keys.push(...await this.#signer.getKeys(after.slice(at, at + wanted)));
      at += wanted;
    }
    return pageOf(keys, limit);
  }

  #call(op: StoreOp, ...parts: Uint8Array[]): Promise<Uint8Array> {
    return sealingCall(this.#signer.transport, op, ...parts);
  }

  #record(body: Uint8Array) {
    const record = decodeKeyRecord(body);
    if (record === undefined) throw new KeycellError("internal", "the key server sent a malformed key record");
    return record;
  }
}
