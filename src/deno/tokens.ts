/**
 * Where `serve` finds its tokens: `tokens.json` in the data directory (names, hashes, scopes and
 * rates, checked against one schema), and `admin.token`, which `serve` creates (mode 0600) when no
 * token is configured at all. `keycell tokens` edits `tokens.json`; a running `serve` reloads it
 * when it changes.
 *
 * @module
 */

import { newToken, sha256Hex, type TokenEntry, TokenStore } from "../host/auth.ts";
import { parseTokensFile } from "../host/tokens_file.ts";

export { TokensFile } from "../host/tokens_file.ts";

/**
 * Reads and checks `tokens.json`; `undefined` when there is none. Throws one message naming
 * every problem (`tokens.json: tokens[0].keys: ...`) for a file of the wrong shape.
 *
 * @example
 * ```ts
 * import { readTokensFile } from "./tokens.ts";
 *
 * readTokensFile("/nonexistent"); // undefined
 * ```
 */
export function readTokensFile(dataDir: string): TokenEntry[] | undefined {
  const path = `${dataDir}/tokens.json`;
  const text = readIfExists(path);
  return text === undefined ? undefined : parseTokensFile(text, path);
}

/**
 * Writes `tokens.json` whole (mode 0600), through a temporary file renamed into place, so a
 * reader sees the old file or the new one, never half of one.
 *
 * @example
 * ```ts
 * import { writeTokensFile } from "./tokens.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * writeTokensFile(dir, []);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function writeTokensFile(dataDir: string, tokens: readonly TokenEntry[]): void {
  const path = `${dataDir}/tokens.json`;
  const temp = `${path}.${crypto.randomUUID()}.tmp`;
  Deno.writeTextFileSync(temp, JSON.stringify({ tokens }, null, 2) + "\n", { mode: 0o600, createNew: true });
  Deno.renameSync(temp, path);
}

/**
 * Loads the configured tokens, creating an admin token when there are none.
 * Returns the store and, when it made one, the path of the new admin token.
 *
 * @example
 * ```ts
 * import { loadTokens } from "./tokens.ts";
 *
 * const dataDir = await Deno.makeTempDir();
 * try {
 *   const { createdAdminToken } = loadTokens(dataDir); // no tokens.json: an admin token is made
 *   createdAdminToken === `${dataDir}/admin.token`; // true
 * } finally {
 *   await Deno.remove(dataDir, { recursive: true });
 * }
 * ```
 */
export function loadTokens(dataDir: string): { store: TokenStore; createdAdminToken?: string } {
  const { entries, createdAdminToken } = loadTokenEntries(dataDir);
  return { store: TokenStore.fromEntries(entries), createdAdminToken };
}

/**
 * The configured tokens as `tokens.json` entries (hashes and scopes), the admin token's among
 * them, creating an admin token when there are none; for servers that take the entries elsewhere
 * (the workerd api Worker's `TOKENS` binding).
 *
 * @example
 * ```ts
 * import { loadTokenEntries } from "./tokens.ts";
 *
 * const dataDir = await Deno.makeTempDir();
 * try {
 *   const { entries } = loadTokenEntries(dataDir); // no tokens.json: an admin token is made
 *   JSON.stringify({ tokens: entries }); // {"tokens":[{"name":"admin","sha256":"…","keys":"*"}]}
 * } finally {
 *   await Deno.remove(dataDir, { recursive: true });
 * }
 * ```
 */
export function loadTokenEntries(dataDir: string): { entries: TokenEntry[]; createdAdminToken?: string } {
  const entries: TokenEntry[] = [...readTokensFile(dataDir) ?? []];
  const adminFile = `${dataDir}/admin.token`;
  let admin = readIfExists(adminFile)?.trim();
  let createdAdminToken: string | undefined;
  if (admin === undefined && entries.length === 0) {
    admin = newToken();
    Deno.writeTextFileSync(adminFile, admin + "\n", { mode: 0o600, createNew: true });
    createdAdminToken = adminFile;
  }
  if (admin) entries.push({ name: "admin", sha256: sha256Hex(admin), keys: "*" });
  return { entries, createdAdminToken };
}

function readIfExists(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}
