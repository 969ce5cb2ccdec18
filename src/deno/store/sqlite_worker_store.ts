/**
 * The SQLite key store on a thread of its own. node:sqlite blocks the thread that calls it; here
 * that is a Worker's, so a slow, locked or frozen disk delays only the calls that need the store
 * (which the sealed-key service times out as `signer_unavailable`), never a signature with a key
 * the guest holds, nor any other request.
 *
 * @module
 */

import { type KeyNameRecord, type KeyPage, type KeyStore, type ListOptions, SealedUnderOtherKey, type StoredKey } from "../../core/key_store.ts";
import type { KeylessNames } from "../../core/key_names.ts";
import { getLog } from "../../core/log.ts";

const log = getLog();

/** How long `close` lets the database finish before ending the Worker anyway. */
const CLOSE_WAIT_MS = 2_000;

/** A call to the store Worker. */
export interface StoreCall {
  id: number;
  method: string;
  args: unknown[];
}

/** The store Worker's answer to one {@linkcode StoreCall}. */
export type StoreReply = { id: number; value: unknown } | { id: number; error: string; fenced: boolean };

/**
 * A {@linkcode KeyStore} whose SQLite file is opened and used in a Worker.
 *
 * @example
 * ```ts
 * import { SqliteWorkerStore } from "./sqlite_worker_store.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const store = await SqliteWorkerStore.open(`${dir}/keys.db`);
 * console.log(await store.count()); // 0
 * await store.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class SqliteWorkerStore implements KeyStore {
  readonly kind = "sqlite";
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve(value: unknown): void; reject(err: Error): void }>();
  #next = 0;

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.onmessage = (event: MessageEvent<StoreReply>) => {
      const reply = event.data;
      const call = this.#pending.get(reply.id);
      if (call === undefined) return;
      this.#pending.delete(reply.id);
      if ("error" in reply) call.reject(reply.fenced ? new SealedUnderOtherKey() : new Error(reply.error));
      else call.resolve(reply.value);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      const err = new Error(`the key store's thread failed: ${event.message}`);
      for (const call of this.#pending.values()) call.reject(err);
      this.#pending.clear();
    };
  }

  /** Opens (creating if needed, mode 0600) the store file in a new Worker. */
  static async open(path: string): Promise<SqliteWorkerStore> {
    const store = new SqliteWorkerStore(new Worker(new URL("./_sqlite_worker.ts", import.meta.url), { type: "module" }));
    try {
      const journalMode = await store.#call<string>("open", path);
      if (journalMode !== "delete") {
        log.warn(`${path} stays in ${journalMode} mode while another process has it open; a full or read-only disk can then end this process`, {
          journalMode,
        });
      }
    } catch (err) {
      store.#worker.terminate();
      throw err;
    }
    return store;
  }

  #call<T>(method: string, ...args: unknown[]): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#worker.postMessage({ id, method, args } satisfies StoreCall);
    });
  }

  put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return this.#call("put", key, sealedUnder);
  }
  putMany(keys: StoredKey[]): Promise<void> {
    return this.#call("putMany", keys);
  }
  get(id: string): Promise<StoredKey | undefined> {
    return this.#call("get", id);
  }
  delete(id: string): Promise<boolean> {
    return this.#call("delete", id);
  }
  findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined> {
    return this.#call("findByKeylessName", by);
  }
  list(options: ListOptions): Promise<KeyPage> {
    return this.#call("list", options);
  }
  count(): Promise<number> {
    return this.#call("count");
  }
  getMeta(name: string): Promise<Uint8Array | undefined> {
    return this.#call("getMeta", name);
  }
  setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array> {
    return this.#call("setMetaOnce", name, value, sealedUnder);
  }
  replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return this.#call("replaceSealed", id, from, to);
  }
  replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return this.#call("replaceMeta", name, from, to);
  }
  getName(name: string): Promise<KeyNameRecord | undefined> {
    return this.#call("getName", name);
  }
  writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return this.#call("writeName", from, to, key, sealedUnder);
  }
  deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean> {
    return this.#call("deleteName", name, from, ids);
  }
  dueDeletions(now: number): Promise<string[]> {
    return this.#call("dueDeletions", now);
  }

  /** Closes the database and ends the Worker (at once if the disk is stalled); calls still waiting reject. */
  async close(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([this.#call("close"), new Promise((resolve) => timer = setTimeout(resolve, CLOSE_WAIT_MS))]);
    } finally {
      clearTimeout(timer);
      this.#worker.terminate();
      for (const call of this.#pending.values()) call.reject(new Error("the key store is closed"));
      this.#pending.clear();
    }
  }
}
