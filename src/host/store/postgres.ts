/**
 * The shared key store: PostgreSQL, for several nodes that serve one key set. It holds sealed
 * blobs and public keys only; every node needs the same master key file to open them.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import postgres from "postgres";
import type { KeySpec } from "../../guest/protocol.ts";
import { keyNames } from "../../keyless/keys.ts";
import { type KeyPage, type KeyStore, pageOf, type StoredKey } from "./store.ts";

type Row = { id: string; key_spec: string; public_key: Uint8Array; sealed?: Uint8Array };

/**
 * A {@linkcode KeyStore} in PostgreSQL (tables `keycell_keys` and `keycell_meta`).
 *
 * @example
 * ```ts
 * const store = await PostgresKeyStore.open("postgres://keycell@127.0.0.1:5432/keycell");
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
      await sql`CREATE TABLE IF NOT EXISTS keycell_key_names (name text PRIMARY KEY, id text NOT NULL)`;
      await sql`CREATE INDEX IF NOT EXISTS keycell_key_names_by_id ON keycell_key_names (id)`;
      // Keys stored before the name index existed get their names once.
      const unnamed = await sql<Row[]>`SELECT id, public_key FROM keycell_keys k
        WHERE NOT EXISTS (SELECT 1 FROM keycell_key_names n WHERE n.id = k.id)`;
      await insertNames(sql, unnamed.map((row) => ({ id: row.id, publicKey: row.public_key })));
    } catch (err) {
      await sql.end({ timeout: 1 });
      throw err;
    }
    return new PostgresKeyStore(sql);
  }

  async put(key: StoredKey): Promise<boolean> {
    return await this.#sql.begin(async (sql) => {
      const result = await sql`INSERT INTO keycell_keys (id, key_spec, public_key, sealed)
        VALUES (${key.id}, ${key.keySpec}, ${bytes(key.publicKey)}, ${bytes(key.sealed)}) ON CONFLICT (id) DO NOTHING`;
      if (result.count === 1) await insertNames(sql, [key]);
      return result.count === 1;
    });
  }

  async putMany(keys: StoredKey[]): Promise<void> {
    if (keys.length === 0) return;
    const rows = keys.map((k) => ({ id: k.id, key_spec: k.keySpec, public_key: bytes(k.publicKey), sealed: bytes(k.sealed) }));
    await this.#sql.begin(async (sql) => {
      const added = new Set((await sql<{ id: string }[]>`INSERT INTO keycell_keys ${sql(rows)} ON CONFLICT (id) DO NOTHING RETURNING id`).map((r) => r.id));
      await insertNames(sql, keys.filter((k) => added.has(k.id)));
    });
  }

  async findByName(name: string): Promise<string | undefined> {
    const [row] = await this.#sql<{ id: string }[]>`SELECT id FROM keycell_key_names WHERE name = ${name}`;
    return row?.id;
  }

  async get(id: string): Promise<StoredKey | undefined> {
    const [row] = await this.#sql<Row[]>`SELECT id, key_spec, public_key, sealed FROM keycell_keys WHERE id = ${id}`;
    return row && { ...listed(row), sealed: new Uint8Array(row.sealed!) };
  }

  async delete(id: string): Promise<boolean> {
    return await this.#sql.begin(async (sql) => {
      await sql`DELETE FROM keycell_key_names WHERE id = ${id}`;
      return (await sql`DELETE FROM keycell_keys WHERE id = ${id}`).count === 1;
    });
  }

  async list({ limit, cursor }: { limit: number; cursor?: string }): Promise<KeyPage> {
    const rows = cursor === undefined
      ? await this.#sql<Row[]>`SELECT id, key_spec, public_key FROM keycell_keys ORDER BY id LIMIT ${limit + 1}`
      : await this.#sql<Row[]>`SELECT id, key_spec, public_key FROM keycell_keys WHERE id > ${cursor}
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

  async setMetaOnce(name: string, value: Uint8Array): Promise<Uint8Array> {
    await this.#sql`INSERT INTO keycell_meta (name, value) VALUES (${name}, ${bytes(value)}) ON CONFLICT (name) DO NOTHING`;
    return (await this.getMeta(name))!;
  }

  async replaceSealed(id: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return (await this.#sql`UPDATE keycell_keys SET sealed = ${bytes(to)} WHERE id = ${id} AND sealed = ${bytes(from)}`).count === 1;
  }

  async replaceMeta(name: string, from: Uint8Array, to: Uint8Array): Promise<boolean> {
    return (await this.#sql`UPDATE keycell_meta SET value = ${bytes(to)} WHERE name = ${name} AND value = ${bytes(from)}`).count === 1;
  }

  async close(): Promise<void> {
    await this.#sql.end({ timeout: 2 });
  }
}

/** Indexes keys under the names Keyless clients find them by. */
async function insertNames(sql: postgres.Sql | postgres.TransactionSql, keys: { id: string; publicKey: Uint8Array }[]): Promise<void> {
  const rows = keys.flatMap((key) => keyNames(key.publicKey).map((name) => ({ name, id: key.id })));
  // Bounded batches: one statement carries at most 65,535 parameters.
  for (let at = 0; at < rows.length; at += 10_000) {
    await sql`INSERT INTO keycell_key_names ${sql(rows.slice(at, at + 10_000))} ON CONFLICT (name) DO NOTHING`;
  }
}

/** The client sends a Node Buffer as bytea; a plain Uint8Array would go as text. */
function bytes(b: Uint8Array): Uint8Array {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function listed(row: Row): { id: string; keySpec: KeySpec; publicKey: Uint8Array } {
  return { id: row.id, keySpec: row.key_spec as KeySpec, publicKey: new Uint8Array(row.public_key) };
}
