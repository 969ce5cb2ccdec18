/**
 * The api Worker's view of the key store: every call goes to the one Durable Object that holds
 * the store ({@linkcode SqlKeyStore} inside it), through a stub made for that call, since a stub
 * belongs to the request that made it.
 *
 * @module
 */

import { type KeyPage, type KeyStore, type ListOptions, SealedUnderOtherKey } from "../core/key_store.ts";

/**
 * The methods of a {@linkcode KeyStore} a Durable Object answers over RPC; `list` takes its `ids`
 * as an array, which every RPC layer carries.
 */
export type KeyStoreMethods = Omit<KeyStore, "kind" | "close" | "list"> & { list(options: RpcListOptions): Promise<KeyPage> };

/** {@linkcode ListOptions} as they cross RPC. */
export type RpcListOptions = Omit<ListOptions, "ids"> & { ids?: string[] };

/** The part of a Durable Object namespace binding the store uses. */
export interface KeyStoreNamespace {
  idFromName(name: string): unknown;
  get(id: unknown): KeyStoreMethods;
}

/** Name of the Durable Object that holds the store. */
export const STORE_OBJECT_NAME = "keys";

/**
 * A {@linkcode KeyStore} kept in a Durable Object.
 *
 * @example
 * ```ts
 * import { DurableKeyStore, type KeyStoreNamespace } from "./durable_key_store.ts";
 *
 * // In a request handler, with the api Worker's Durable Object binding: each call reaches the
 * // Durable Object through a stub of its own.
 * async function keyCount(env: { KEYS: KeyStoreNamespace }): Promise<number> {
 *   const store = new DurableKeyStore(env.KEYS);
 *   return await store.count();
 * }
 * ```
 */
export class DurableKeyStore implements KeyStore {
  readonly kind = "durable-object";
  readonly #namespace: KeyStoreNamespace;

  constructor(namespace: KeyStoreNamespace) {
    this.#namespace = namespace;
  }

  #stub(): KeyStoreMethods {
    return this.#namespace.get(this.#namespace.idFromName(STORE_OBJECT_NAME));
  }

  put: KeyStore["put"] = (key, sealedUnder) => this.#stub().put(key, sealedUnder).catch(fenced);
  putMany: KeyStore["putMany"] = (keys) => this.#stub().putMany(keys);
  get: KeyStore["get"] = (id) => this.#stub().get(id);
  delete: KeyStore["delete"] = (id) => this.#stub().delete(id);
  findByKeylessName: KeyStore["findByKeylessName"] = (by) => this.#stub().findByKeylessName(by);
  list: KeyStore["list"] = ({ ids, ...options }) => this.#stub().list(ids === undefined ? options : { ...options, ids: [...ids] });
  count: KeyStore["count"] = () => this.#stub().count();
  getMeta: KeyStore["getMeta"] = (name) => this.#stub().getMeta(name);
  setMetaOnce: KeyStore["setMetaOnce"] = (name, value, sealedUnder) => this.#stub().setMetaOnce(name, value, sealedUnder).catch(fenced);
  replaceSealed: KeyStore["replaceSealed"] = (id, from, to) => this.#stub().replaceSealed(id, from, to);
  replaceMeta: KeyStore["replaceMeta"] = (name, from, to) => this.#stub().replaceMeta(name, from, to);
  getName: KeyStore["getName"] = (name) => this.#stub().getName(name);
  writeName: KeyStore["writeName"] = (from, to, key, sealedUnder) => this.#stub().writeName(from, to, key, sealedUnder).catch(fenced);
  deleteName: KeyStore["deleteName"] = (name, from, ids) => this.#stub().deleteName(name, from, ids);
  dueDeletions: KeyStore["dueDeletions"] = (now) => this.#stub().dueDeletions(now);

  close(): Promise<void> {
    return Promise.resolve();
  }
}

const FENCED_MESSAGE = new SealedUnderOtherKey().message;

/**
 * An error from the Durable Object as the caller's own: RPC keeps an error's message but not its
 * class, so the store's refusal of a blob sealed under another master key is told by its message.
 */
function fenced(err: unknown): never {
  throw err instanceof Error && !(err instanceof SealedUnderOtherKey) && err.message === FENCED_MESSAGE ? new SealedUnderOtherKey() : err;
}
