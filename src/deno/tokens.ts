/**
 * Where `serve` finds its tokens: `tokens.json` in the data directory (hashes and scopes), and
 * `admin.token`, which `serve` creates (mode 0600) when no token is configured at all.
 *
 * @module
 */

import { newToken, sha256Hex, type TokenEntry, TokenStore } from "../host/auth.ts";

/**
 * Loads the configured tokens, creating an admin token when there are none.
 * Returns the store and, when it made one, the path of the new admin token.
 *
 * @example
 * ```ts
 * const { store, createdAdminToken } = loadTokens(".keycell");
 * ```
 */
export function loadTokens(dataDir: string): { store: TokenStore; createdAdminToken?: string } {
  const { entries, createdAdminToken } = loadTokenEntries(dataDir);
  return { store: TokenStore.fromEntries(entries), createdAdminToken };
}

/**
 * The configured tokens as `tokens.json` entries (hashes and scopes), the admin token's among
 * them, creating an admin token when there are none; for servers that take the entries elsewhere.
 *
 * @example
 * ```ts
 * const { entries } = loadTokenEntries(".keycell");
 * console.log(JSON.stringify({ tokens: entries }));
 * ```
 */
export function loadTokenEntries(dataDir: string): { entries: TokenEntry[]; createdAdminToken?: string } {
  const entries: TokenEntry[] = [];
  const tokensFile = `${dataDir}/tokens.json`;
  const configured = readIfExists(tokensFile);
  if (configured !== undefined) {
    let parsed: { tokens?: TokenEntry[] };
    try {
      parsed = JSON.parse(configured);
    } catch (err) {
      throw new Error(`${tokensFile}: not JSON (${(err as Error).message})`);
    }
    if (!Array.isArray(parsed.tokens)) throw new Error(`${tokensFile}: expected {"tokens": [...]}`);
    entries.push(...parsed.tokens);
  }
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
