/**
 * Opens the key store a configuration names.
 *
 * @module
 */

import type { Config } from "../config.ts";
import { PostgresKeyStore } from "./postgres.ts";
import { SqliteWorkerStore } from "./sqlite_worker_store.ts";
import type { KeyStore } from "../../core/key_store.ts";

/**
 * SQLite in `<dataDir>/keys.db` by default, on a thread of its own so that a slow disk stalls no
 * request that does not need it; PostgreSQL at KEYCELL_POSTGRES_URL when asked for.
 *
 * @example
 * ```ts
 * import { loadConfig } from "../config.ts";
 * import { openKeyStore } from "./open.ts";
 *
 * async function openConfigured() {
 *   return await openKeyStore(loadConfig((name) => Deno.env.get(name)));
 * }
 * ```
 */
export async function openKeyStore(config: Pick<Config, "dataDir" | "store" | "postgresUrl">): Promise<KeyStore> {
  if (config.store === "postgres") return await PostgresKeyStore.open(config.postgresUrl!);
  return await SqliteWorkerStore.open(`${config.dataDir}/keys.db`);
}
