/**
 * The shared key store: PostgreSQL, for several nodes that serve one key set. It holds sealed
 * blobs and public keys only; every node needs the same master key file to open them.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import postgres from "postgres";
import type { KeySpec } from "../../core/protocol.ts";
import { type KeylessNames, keylessNames } from "../../core/key_names.ts";
import {
  admitsSealedUnder,
  decodeKeyName,
  encodeKeyName,
  type KeyNameRecord,
  type KeyPage,
  type ListedKey,
  sameRecord,
  versionOf,
  type KeyStore,
  type ListOptions,
  META,
  pageOf,
  SealedUnderOtherKey,
  type StoredKey,
} from "../../core/key_store.ts";

type Row = { id: string; key_spec: string; public_key: Uint8Array; sealed?: Uint8Array; name?: string | null };

/**
 * A {@linkcode KeyStore} in PostgreSQL (tables `keycell_keys` and `keycell_meta`).
 *
 * @example
 * ```ts
 * import { PostgresKeyStore } from "./postgres.ts";
 *
 * async function open(): Promise<PostgresKeyStore> {
 *   return await PostgresKeyStore.open("postgres://keycell@127.0.0.1:5432/keycell");
 * }
 * ```
 */
export class PostgresKeyStore implements KeyStore {
  readonly kind = "postgres";
  readonly #sql: postgres.Sql;

  private constructor(sql: postgres.Sql) {
    this.#sql = sql;
  }

  /** Connects and creates the tables if they do not exist. */
  static async open(url: string, options: { connectTimeoutSeconds?: number } = {}): Promise<PostgresKeyStore> {
    const sql = postgres(url, {
      max: 4,
      connect_timeout: options.connectTimeoutSeconds ?? 10,
      onnotice: () => {},
    });
    try {
      await sql`CREATE TABLE IF NOT EXISTS keycell_keys (
        id text PRIMARY KEY, key_spec text NOT NULL, public_key bytea NOT NULL, sealed bytea NOT NULL)`;
      await sql`CREATE TABLE IF NOT EXISTS keycell_meta (name text PRIMARY KEY, value bytea NOT NULL)`;
      // Keyless names, indexed; stores from before them get the columns, then every key is named once.
      await sql`ALTER TABLE keycell_keys ADD COLUMN IF NOT EXISTS ski bytea, ADD COLUMN IF NOT EXISTS cert_digest bytea`;
      await sql`CREATE INDEX IF NOT EXISTS keycell_keys_by_ski ON keycell_keys (ski) WHERE ski IS NOT NULL`;
      await sql`CREATE INDEX IF NOT EXISTS keycell_keys_by_cert_digest ON keycell_keys (cert_digest) WHERE cert_digest IS NOT NULL`;
      await sql`CREATE INDEX IF NOT EXISTS keycell_keys_unnamed ON keycell_keys (id) WHERE ski IS NULL`;
      await nameUnnamed(sql);
      // Named keys; in a store from before them every key is a name of its own (name NULL).
      await sql`ALTER TABLE keycell_keys ADD COLUMN IF NOT EXISTS name text`;
      await sql`CREATE TABLE IF NOT EXISTS keycell_names (name text PRIMARY KEY, record bytea NOT NULL, deletion_due bigint)`;
      await sql`CREATE INDEX IF NOT EXISTS keycell_names_by_deletion ON keycell_names (deletion_due) WHERE deletion_due IS NOT NULL`;
    } catch (err) {
      await sql.end({ timeout: 1 });
      throw err;
    }
    return new PostgresKeyStore(sql);
  }

  async put(key: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    if (sealedUnder === undefined) {
      return (await this.#sql`INSERT INTO keycell_keys ${this.#sql(row(key))} ON CONFLICT (id) DO NOTHING`).count === 1;
    }
    return await this.#fenced(sealedUnder, async (sql) =>
      (await sql`INSERT INTO keycell_keys ${sql(row(key))} ON CONFLICT (id) DO NOTHING`).count === 1
    );
  }

  /**
   * Runs `work` in a transaction that holds a share lock on the master key id's row, after
   * checking that it admits `sealedUnder`: a rotation's fencing update waits for the
   * transaction, and once fenced, no transaction gets past the check.
   */
  async #fenced<T>(sealedUnder: Uint8Array, work: (sql: postgres.TransactionSql) => Promise<T>): Promise<T> {
    return await this.#sql.begin(async (sql) => {
      const [recorded] = await sql<{ value: Uint8Array }[]>`
        SELECT value FROM keycell_meta WHERE name = ${META.MASTER_KEY_ID} FOR SHARE`;
      if (!admitsSealedUnder(recorded && new Uint8Array(recorded.value), sealedUnder)) throw new SealedUnderOtherKey();
      return await work(sql);
    }) as T;
  }

  async putMany(keys: StoredKey[]): Promise<void> {
    if (keys.length === 0) return;
    await this.#sql`INSERT INTO keycell_keys ${this.#sql(keys.map(row))} ON CONFLICT (id) DO NOTHING`;
  }

  async findByKeylessName(by: Partial<KeylessNames>): Promise<string | undefined> {
    const [found] = by.ski
      ? await this.#sql<{ id: string }[]>`SELECT id FROM keycell_keys WHERE ski = ${bytes(by.ski)}`
      : by.certificateDigest
      ? await this.#sql<{ id: string }[]>`SELECT id FROM keycell_keys WHERE cert_digest = ${bytes(by.certificateDigest)}`
      : [];
    return found?.id;
  }

  async get(id: string): Promise<StoredKey | undefined> {
    const [row] = await this.#sql<Row[]>`SELECT id, key_spec, public_key, sealed, name FROM keycell_keys WHERE id = ${id}`;
    return row && { ...listed(row), sealed: new Uint8Array(row.sealed!) };
  }

  async delete(id: string): Promise<boolean> {
    return (await this.#sql`DELETE FROM keycell_keys WHERE id = ${id}`).count === 1;
  }

  async list({ limit, cursor, ids }: ListOptions): Promise<KeyPage> {
    const rows = ids !== undefined
      ? await this.#sql<Row[]>`SELECT id, key_spec, public_key, name FROM keycell_keys WHERE id = ANY(${[...ids]}::text[])
          AND id > ${cursor ?? ""} ORDER BY id LIMIT ${limit + 1}`
      : cursor === undefined
      ? await this.#sql<Row[]>`SELECT id, key_spec, public_key, name FROM keycell_keys ORDER BY id LIMIT ${limit + 1}`
      : await this.#sql<Row[]>`SELECT id, key_spec, public_key, name FROM keycell_keys WHERE id > ${cursor}
          ORDER BY id LIMIT ${limit + 1}`;
    return pageOf(rows.map(listed), limit);
  }

  async count(): Promise<number> {
    const [row] = await this.#sql<{ n: string }[]>`SELECT count(*) AS n FROM keycell_keys`;
    return Number(row.n);
  }

  async getMeta(name: string): Promise<Uint8Array | undefined> {
    const [row] = await this.#sql<{ value: Uint8Array }[]>`SELECT value FROM keycell_meta WHERE name = ${name}`;
    return row && new Uint8Array(row.value);
  }

  async setMetaOnce(name: string, value: Uint8Array, sealedUnder?: Uint8Array): Promise<Uint8Array> {
    const insert = (sql: postgres.Sql | postgres.TransactionSql) =>
      sql`INSERT INTO keycell_meta (name, value) VALUES (${name}, ${bytes(value)}) ON CONFLICT (name) DO NOTHING`;
    if (sealedUnder === undefined) await insert(this.#sql);
    else await this.#fenced(sealedUnder, insert);
    return (await this.getMeta(name))!;
  }

  async replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return (await this.#sql`UPDATE keycell_keys SET sealed = ${bytes(to)} WHERE id = ${id} AND sealed = ${bytes(from)}`).count === 1;
  }

  async replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return (await this.#sql`UPDATE keycell_meta SET value = ${bytes(to)} WHERE name = ${name} AND value = ${bytes(from)}`).count === 1;
  }

  async getName(name: string): Promise<KeyNameRecord | undefined> {
    return await recordOf(this.#sql, name);
  }

  async writeName(from: KeyNameRecord | undefined, to: KeyNameRecord, key?: StoredKey, sealedUnder?: Uint8Array): Promise<boolean> {
    const work = async (sql: postgres.TransactionSql) => {
      if (!sameRecord(await recordOf(sql, to.name, true), from)) return false;
      if (key !== undefined && (await sql`INSERT INTO keycell_keys ${sql(row(versionOf(key, to.name)))} ON CONFLICT (id) DO NOTHING`).count !== 1) {
        return false;
      }
      const due = to.state === "pending_deletion" ? to.deletionDate ?? 0 : null;
      const written = await sql`INSERT INTO keycell_names (name, record, deletion_due) VALUES (${to.name}, ${bytes(encodeKeyName(to))}, ${due})
        ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record, deletion_due = EXCLUDED.deletion_due`;
      return written.count === 1;
    };
    // A record first made by two writers at once: one insert waits for the other, then fails the
    // primary key, and that writer's transaction (its new key too) rolls back.
    try {
      if (sealedUnder === undefined) return await this.#sql.begin(work) as boolean;
      return await this.#fenced(sealedUnder, work);
    } catch (err) {
      if ((err as { code?: string }).code === UNIQUE_VIOLATION) return false;
      throw err;
    }
  }

  async deleteName(name: string, from: KeyNameRecord | undefined, ids: readonly string[]): Promise<boolean> {
    return await this.#sql.begin(async (sql) => {
      if (!sameRecord(await recordOf(sql, name, true), from)) return false;
      await sql`DELETE FROM keycell_names WHERE name = ${name}`;
      await sql`DELETE FROM keycell_keys WHERE id = ANY(${[...ids]}::text[])`;
      return true;
    }) as boolean;
  }

  async dueDeletions(now: number): Promise<string[]> {
    const rows = await this.#sql<{ name: string }[]>`SELECT name FROM keycell_names WHERE deletion_due <= ${now} ORDER BY name`;
    return rows.map((r) => r.name);
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 2 });
  }
}

/** PostgreSQL's SQLSTATE for a duplicate key. */
const UNIQUE_VIOLATION = "23505";

/** A name's record; `forUpdate` locks its row until the transaction ends. */
async function recordOf(sql: postgres.Sql | postgres.TransactionSql, name: string, forUpdate = false): Promise<KeyNameRecord | undefined> {
  const [found] = forUpdate
    ? await sql<{ record: Uint8Array }[]>`SELECT record FROM keycell_names WHERE name = ${name} FOR UPDATE`
    : await sql<{ record: Uint8Array }[]>`SELECT record FROM keycell_names WHERE name = ${name}`;
  return found && decodeKeyName(new Uint8Array(found.record));
}

/** A key as a row, with the names Keyless clients find it by. */
function row(key: StoredKey) {
  const names = keylessNames(key.publicKey);
  return {
    id: key.id,
    key_spec: key.keySpec,
    public_key: bytes(key.publicKey),
    sealed: bytes(key.sealed),
    ski: names ? bytes(names.ski) : null,
    cert_digest: names?.certificateDigest ? bytes(names.certificateDigest) : null,
    name: key.name ?? null,
  };
}

/** Names the keys that have no Keyless names yet, a thousand at a time. */
async function nameUnnamed(sql: postgres.Sql): Promise<void> {
  let after = "";
  for (;;) {
    const rows = await sql<Row[]>`SELECT id, public_key FROM keycell_keys WHERE ski IS NULL AND id > ${after} ORDER BY id LIMIT 1000`;
    if (rows.length === 0) return;
    for (const r of rows) {
      const names = keylessNames(r.public_key);
      if (names === undefined) continue;
      await sql`UPDATE keycell_keys SET ski = ${bytes(names.ski)},
        cert_digest = ${names.certificateDigest ? bytes(names.certificateDigest) : null} WHERE id = ${r.id}`;
    }
    after = rows[rows.length - 1].id;
  }
}

/** The client sends a Node Buffer as bytea; a plain Uint8Array would go as text. */
function bytes(b: Uint8Array): Uint8Array {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function listed(row: Row): ListedKey {
  const key: ListedKey = { id: row.id, keySpec: row.key_spec as KeySpec, publicKey: new Uint8Array(row.public_key) };
  if (row.name) key.name = row.name;
  return key;
}
