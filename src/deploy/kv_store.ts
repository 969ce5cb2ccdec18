/**
 * The key store on Deno KV (`Deno.openKv`): a local SQLite file under `deno serve`, the project's
 * database on Deno Deploy. It holds sealed blobs, public keys and the store's metadata, never a
 * plaintext key.
 *
 * Layout: `["keys", id]` holds `{ keySpec, publicKey, sealed, name? }` (`name` absent in a key that
 * is its own name, as every key stored before named keys is); `["names", name]` holds a named
 * key's record (`encodeKeyName`), and `["deletion_due", name]` its deletion date while it is
 * pending deletion; `["ski", ski]` and
 * `["certificate_digest", digest]` hold the id of the key with that Keyless name; `["meta", name]`
 * holds a metadata value. Every write that must not race another is one atomic operation whose
 * `check`s name the entries it read (a key's absence, the master key id fence), retried when a
 * check fails.
 *
 * @module
 */

import type { KeySpec } from "../core/protocol.ts";
import { type KeylessNames, keylessNames } from "../core/key_names.ts";
import {
  admitsSealedUnder,
  decodeKeyName,
  encodeKeyName,
  type KeyNameRecord,
  type KeyPage,
  sameRecord,
  versionOf,
  type KeyStore,
  type ListedKey,
  type ListOptions,
  META,
  pageOf,
  SealedUnderOtherKey,
  type StoredKey,
} from "../core/key_store.ts";

/** A key's entry value. */
interface KeyValue {
  keySpec: KeySpec;
  publicKey: Uint8Array;
  sealed: Uint8Array;
  name?: string;
}

const KEYS = "keys";
const NAMES = "names";
const DELETION_DUE = "deletion_due";
const META_PREFIX = "meta";
const SKI = "ski";
const CERTIFICATE_DIGEST = "certificate_digest";

/** Deno KV reads at most this many keys in one `getMany`. */
const GET_MANY = 10;
/**
 * Keys per atomic operation in {@linkcode KvKeyStore.putMany}: each takes one check and up to three
 * mutations, well inside Deno KV's limits on one operation (checks, mutations, bytes).
 */
const PUT_MANY_CHUNK = 50;
/** Attempts at an atomic write whose checks keep failing (other writers) before giving up. */
const ATTEMPTS = 100;

/**
 * A {@linkcode KeyStore} on Deno KV.
 *
 * @example
 * ```ts
 * import { KvKeyStore } from "./kv_store.ts";
 *
 * const store = await KvKeyStore.open(":memory:");
 * await store.count(); // 0
 * await store.close();
 * ```
 */
export class KvKeyStore implements KeyStore {
  readonly kind = "deno-kv";
  readonly #kv: Deno.Kv;

  /** Uses an open database; {@linkcode KvKeyStore.close} closes it. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** Opens the database at `path` (`:memory:` for a throwaway one); without a path, the default one (Deno Deploy's). */
  static async open(path?: string): Promise<KvKeyStore> {
    return new KvKeyStore(await Deno.openKv(path));
  }

  async put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return await retry(`store key ${key.id}`, async () => {
      const fence = sealedUnder === undefined ? undefined : await this.#fence(sealedUnder);
      const existing = await this.#kv.get<KeyValue>([KEYS, key.id]);
      if (existing.versionstamp !== null) return false;
      const op = this.#kv.atomic().check(existing);
      if (fence !== undefined) op.check(fence);
      this.#insert(op, key);
      return (await op.commit()).ok ? true : undefined;
    });
  }

  async putMany(keys: StoredKey[]): Promise<void> {
    for (let at = 0; at < keys.length; at += PUT_MANY_CHUNK) {
      const chunk = [...new Map(keys.slice(at, at + PUT_MANY_CHUNK).map((k) => [k.id, k])).values()];
      await retry("store keys", async () => {
        const existing = await this.#getMany<KeyValue>(chunk.map((k) => [KEYS, k.id]));
        const op = this.#kv.atomic();
        chunk.forEach((key, i) => {
          if (existing[i].versionstamp !== null) return;
          op.check(existing[i]);
          this.#insert(op, key);
        });
        return (await op.commit()).ok ? true : undefined;
      });
    }
  }

  /** Adds a key and its Keyless names to an atomic operation. */
  #insert(op: Deno.AtomicOperation, key: StoredKey): void {
    const value: KeyValue = { keySpec: key.keySpec, publicKey: key.publicKey, sealed: key.sealed };
    if (key.name !== undefined) value.name = key.name;
    op.set([KEYS, key.id], value);
    const names = keylessNames(key.publicKey);
    if (names?.ski) op.set([SKI, names.ski], key.id);
    if (names?.certificateDigest) op.set([CERTIFICATE_DIGEST, names.certificateDigest], key.id);
  }

  async get(id: string): Promise<StoredKey | undefined> {
    const entry = await this.#kv.get<KeyValue>([KEYS, id]);
    return entry.value === null ? undefined : stored(id, entry.value);
  }

  async delete(id: string): Promise<boolean> {
    return await retry(`delete key ${id}`, async () => {
      const entry = await this.#kv.get<KeyValue>([KEYS, id]);
      if (entry.value === null) return false;
      const op = this.#kv.atomic();
      await this.#remove(op, entry as Deno.KvEntry<KeyValue>);
      return (await op.commit()).ok ? true : undefined;
    });
  }

  /** Adds removing a key, and the Keyless names that name it, to an atomic operation. */
  async #remove(op: Deno.AtomicOperation, entry: Deno.KvEntry<KeyValue>): Promise<void> {
    const id = entry.key[1] as string;
    op.check(entry).delete(entry.key);
    const names = keylessNames(entry.value.publicKey);
    // A name entry goes with its key, unless it names another key (never, short of a hash collision).
    const indexed = [names?.ski && [SKI, names.ski], names?.certificateDigest && [CERTIFICATE_DIGEST, names.certificateDigest]]
      .filter((k): k is [string, Uint8Array] => Boolean(k));
    for (const name of await this.#getMany<string>(indexed)) {
      if (name.value === id) op.check(name).delete(name.key);
    }
  }

  async getName(name: string): Promise<KeyNameRecord | undefined> {
    const entry = await this.#kv.get<Uint8Array>([NAMES, name]);
    return entry.value === null ? undefined : decodeKeyName(entry.value);
  }

  async writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    return await retry(`write name ${to.name}`, async () => {
      const fence = sealedUnder === undefined ? undefined : await this.#fence(sealedUnder);
      const record = await this.#kv.get<Uint8Array>([NAMES, to.name]);
      if (!sameRecord(record.value === null ? undefined : decodeKeyName(record.value), from)) return false;
      const op = this.#kv.atomic().check(record);
      if (fence !== undefined) op.check(fence);
      if (key !== undefined) {
        const existing = await this.#kv.get<KeyValue>([KEYS, key.id]);
        if (existing.versionstamp !== null) return false;
        op.check(existing);
        this.#insert(op, versionOf(key, to.name));
      }
      op.set([NAMES, to.name], encodeKeyName(to));
      if (to.state === "pending_deletion") op.set([DELETION_DUE, to.name], to.deletionDate ?? 0);
      else op.delete([DELETION_DUE, to.name]);
      return (await op.commit()).ok ? true : undefined;
    });
  }

  async deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean> {
    return await retry(`delete name ${name}`, async () => {
      const record = await this.#kv.get<Uint8Array>([NAMES, name]);
      if (!sameRecord(record.value === null ? undefined : decodeKeyName(record.value), from)) return false;
      const op = this.#kv.atomic().check(record).delete(record.key).delete([DELETION_DUE, name]);
      for (const entry of await this.#getMany<KeyValue>(ids.map((id) => [KEYS, id]))) {
        if (entry.value !== null) await this.#remove(op, entry as Deno.KvEntry<KeyValue>);
      }
      return (await op.commit()).ok ? true : undefined;
    });
  }

  /** Reads every pending deletion's date: few keys wait for deletion at once. */
  async dueDeletions(now: number): Promise<string[]> {
    const due: string[] = [];
    for await (const entry of this.#kv.list<number>({ prefix: [DELETION_DUE] })) {
      if (entry.value <= now) due.push(entry.key[1] as string);
    }
    return due;
  }

  async findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined> {
    const key = by.ski ? [SKI, by.ski] : by.certificateDigest ? [CERTIFICATE_DIGEST, by.certificateDigest] : undefined;
    if (key === undefined) return undefined;
    return (await this.#kv.get<string>(key)).value ?? undefined;
  }

  async list({ limit, cursor, ids }: ListOptions): Promise<KeyPage> {
    const rows: ListedKey[] = [];
    if (ids !== undefined) {
      // A token's scope: its ids in order, read in batches until the page (and one more) is full.
      const wanted = [...ids].filter((id) => cursor === undefined || id > cursor).sort();
      for (let at = 0; at < wanted.length && rows.length <= limit; at += GET_MANY) {
        for (const entry of await this.#getMany<KeyValue>(wanted.slice(at, at + GET_MANY).map((id) => [KEYS, id]))) {
          if (entry.value !== null) rows.push(listed(entry.key[1] as string, entry.value));
        }
      }
      return pageOf(rows.slice(0, limit + 1), limit);
    }
    // `start` is inclusive: the cursor's own entry, if still there, is skipped.
    const selector = cursor === undefined ? { prefix: [KEYS] } : { prefix: [KEYS], start: [KEYS, cursor] };
    for await (const entry of this.#kv.list<KeyValue>(selector, { limit: limit + 2 })) {
      const id = entry.key[1] as string;
      if (id === cursor) continue;
      rows.push(listed(id, entry.value));
    }
    return pageOf(rows.slice(0, limit + 1), limit);
  }

  /** Counts by listing every key (Deno KV keeps no count): for start-up checks, not for each request. */
  async count(): Promise<number> {
    let n = 0;
    for await (const _ of this.#kv.list({ prefix: [KEYS] })) n++;
    return n;
  }

  async getMeta(name: string): Promise<Uint8Array | undefined> {
    return (await this.#kv.get<Uint8Array>([META_PREFIX, name])).value ?? undefined;
  }

  async setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array> {
    return await retry(`set ${name}`, async () => {
      const fence = sealedUnder === undefined ? undefined : await this.#fence(sealedUnder);
      const existing = await this.#kv.get<Uint8Array>([META_PREFIX, name]);
      if (existing.value !== null) return existing.value;
      const op = this.#kv.atomic().check(existing).set([META_PREFIX, name], value);
      if (fence !== undefined) op.check(fence);
      return (await op.commit()).ok ? value : undefined;
    });
  }

  async replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return await retry(`reseal key ${id}`, async () => {
      const entry = await this.#kv.get<KeyValue>([KEYS, id]);
      if (entry.value === null || !same(entry.value.sealed, from)) return false;
      const op = this.#kv.atomic().check(entry).set(entry.key, { ...entry.value, sealed: to });
      return (await op.commit()).ok ? true : undefined;
    });
  }

  async replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return await retry(`replace ${name}`, async () => {
      const entry = await this.#kv.get<Uint8Array>([META_PREFIX, name]);
      if (entry.value === null || !same(entry.value, from)) return false;
      return (await this.#kv.atomic().check(entry).set(entry.key, to).commit()).ok ? true : undefined;
    });
  }

  close(): Promise<void> {
    this.#kv.close();
    return Promise.resolve();
  }

  /**
   * The master key id entry, read for a write fenced by `sealedUnder`: throws unless it admits
   * the blob. The write then checks the entry, so a rotation that changes it meanwhile fails the
   * write, which reads the fence again.
   */
  async #fence(sealedUnder: Uint8Array): Promise<Deno.KvEntryMaybe<Uint8Array>> {
    const fence = await this.#kv.get<Uint8Array>([META_PREFIX, META.MASTER_KEY_ID]);
    if (!admitsSealedUnder(fence.value ?? undefined, sealedUnder)) throw new SealedUnderOtherKey();
    return fence;
  }

  /** `getMany` for any number of keys, in batches Deno KV accepts. */
  async #getMany<T>(keys: Deno.KvKey[]): Promise<Deno.KvEntryMaybe<T>[]> {
    const out: Deno.KvEntryMaybe<T>[] = [];
    for (let at = 0; at < keys.length; at += GET_MANY) out.push(...await this.#kv.getMany<T[]>(keys.slice(at, at + GET_MANY)));
    return out;
  }
}

/** Runs a read-then-commit attempt until it answers (`undefined`: a check failed, try again). */
async function retry<T>(what: string, attempt: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < ATTEMPTS; i++) {
    const result = await attempt();
    if (result !== undefined) return result;
  }
  throw new Error(`cannot ${what}: the key store kept changing under ${ATTEMPTS} attempts`);
}

function stored(id: string, value: KeyValue): StoredKey {
  return { ...listed(id, value), sealed: value.sealed };
}

function listed(id: string, value: KeyValue): ListedKey {
  const key: ListedKey = { id, keySpec: value.keySpec, publicKey: value.publicKey };
  if (value.name !== undefined) key.name = value.name;
  return key;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
