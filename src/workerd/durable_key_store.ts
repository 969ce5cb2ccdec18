/**
 * The api Worker's view of the key store: every call goes to the one Durable Object that holds
 * the store ({@linkcode SqlKeyStore} inside it), through a stub made for that call, since a stub
 * belongs to the request that made it.
 *
 * @module
 */

import type { KeyStore } from "../core/key_store.ts";

/** The methods of a {@linkcode KeyStore} a Durable Object answers over RPC. */
export type KeyStoreMethods = Omit<KeyStore, "kind" | "close">;

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
 * const store = new DurableKeyStore(env.KEYS);
 * console.log(await store.count());
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

  put: KeyStore["put"] = (key) => this.#stub().put(key);
  putMany: KeyStore["putMany"] = (keys) => this.#stub().putMany(keys);
  get: KeyStore["get"] = (id) => this.#stub().get(id);
  delete: KeyStore["delete"] = (id) => this.#stub().delete(id);
  findByKeylessName: KeyStore["findByKeylessName"] = (by) => this.#stub().findByKeylessName(by);
  list: KeyStore["list"] = (options) => this.#stub().list(options);
  count: KeyStore["count"] = () => this.#stub().count();
  getMeta: KeyStore["getMeta"] = (name) => this.#stub().getMeta(name);
  setMetaOnce: KeyStore["setMetaOnce"] = (name, value) => this.#stub().setMetaOnce(name, value);
  replaceSealed: KeyStore["replaceSealed"] = (id, from, to) => this.#stub().replaceSealed(id, from, to);
  replaceMeta: KeyStore["replaceMeta"] = (name, from, to) => this.#stub().replaceMeta(name, from, to);

  close(): Promise<void> {
    return Promise.resolve();
  }
}
