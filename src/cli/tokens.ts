/**
 * `keycell tokens create|list|revoke`: the API tokens in the data directory's `tokens.json`. A
 * new token is printed once and only its SHA-256 is stored; a running `serve` on the same data
 * directory picks the change up by itself.
 *
 * @module
 */

import { newToken, sha256Hex, type TokenEntry } from "../host/auth.ts";
import { readTokensFile, writeTokensFile } from "../deno/tokens.ts";
import { Exit } from "./keys.ts";

/** `keycell tokens` usage. */
export const TOKENS_USAGE = `usage: keycell tokens <command> [--json]

  create <name> [--keys ID|NAME,... | --keys '*'] [--rate PER_SECOND[:BURST]]
                          a new token, printed once (default scope: every key)
  list                    name, scope and rate of every token in tokens.json
  revoke <name>           remove a token

  Works on KEYCELL_DATA_DIR (default .keycell); a running serve reloads tokens.json when it changes.`;

/**
 * Runs one `keycell tokens` command on `dataDir`; resolves with its exit code.
 *
 * @example
 * ```ts
 * import { runTokens } from "./tokens.ts";
 *
 * const dir = Deno.makeTempDirSync();
 * const out: string[] = [];
 * await runTokens(["create", "edge-eu"], { dataDir: dir, out: (l) => out.push(l), err: console.error });
 * console.log(out[0].length); // 43: the token, shown this once
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function runTokens(
  args: readonly string[],
  context: { dataDir: string; out: (line: string) => void; err: (line: string) => void },
): Promise<number> {
  const json = args.includes("--json");
  const words = args.filter((a) => a !== "--json");
  const [command, name] = words;
  const usage = (why: string) => {
    context.err(`keycell: ${why}`);
    context.err(TOKENS_USAGE);
    return Promise.resolve(Exit.USAGE);
  };
  const flag = (flagName: string) => {
    const at = words.indexOf(flagName);
    return at >= 0 ? words[at + 1] : undefined;
  };
  let tokens: TokenEntry[];
  try {
    tokens = readTokensFile(context.dataDir) ?? [];
  } catch (err) {
    context.err(`keycell: ${(err as Error).message}`);
    return Promise.resolve(Exit.FAILED);
  }
  switch (command) {
    case "list": {
      if (json) context.out(JSON.stringify({ tokens: tokens.map(({ sha256: _, ...t }) => t) }));
      else if (tokens.length === 0) context.out("no tokens in tokens.json (admin.token, if present, is the admin's)");
      else {
        for (const t of tokens) {
          const scope = t.keys === "*" ? "every key" : `${t.keys.length} key${t.keys.length === 1 ? "" : "s"}`;
          const rate = t.rate ? `, ${t.rate.perSecond}/s (burst ${t.rate.burst ?? t.rate.perSecond})` : "";
          context.out(`${t.name}  ${scope}${rate}`);
        }
      }
      return Promise.resolve(Exit.OK);
    }
    case "create": {
      if (name === undefined || name.startsWith("--")) return usage("create needs a name");
      if (tokens.some((t) => t.name === name)) {
        context.err(`keycell: a token named ${JSON.stringify(name)} exists; revoke it first`);
        return Promise.resolve(Exit.FAILED);
      }
      const keys = flag("--keys") ?? "*";
      const rate = flag("--rate");
      const [perSecond, burst] = (rate ?? "").split(":").map(Number);
      if (rate !== undefined && !(perSecond > 0 && (burst === undefined || burst > 0))) return usage("--rate is PER_SECOND or PER_SECOND:BURST, both positive");
      const token = newToken();
      const entry: TokenEntry = {
        name,
        sha256: sha256Hex(token),
        keys: keys === "*" ? "*" : keys.split(",").filter((k) => k !== ""),
        ...(rate !== undefined ? { rate: burst === undefined ? { perSecond } : { perSecond, burst } } : {}),
      };
      try {
        writeTokensFile(context.dataDir, [...tokens, entry]);
        readTokensFile(context.dataDir);
      } catch (err) {
        writeTokensFile(context.dataDir, tokens);
        context.err(`keycell: ${(err as Error).message.replace(/^.*tokens\.json: /, "")}`);
        return Promise.resolve(Exit.USAGE);
      }
      context.out(json ? JSON.stringify({ name, token }) : token);
      if (!json) context.err(`keycell: created token ${JSON.stringify(name)}; it is shown this once, only its hash is kept`);
      return Promise.resolve(Exit.OK);
    }
    case "revoke": {
      if (name === undefined) return usage("revoke needs a name");
      if (!tokens.some((t) => t.name === name)) {
        context.err(`keycell: no token named ${JSON.stringify(name)} in tokens.json`);
        return Promise.resolve(Exit.FAILED);
      }
      writeTokensFile(context.dataDir, tokens.filter((t) => t.name !== name));
      context.out(json ? JSON.stringify({ revoked: name }) : `revoked ${name}`);
      return Promise.resolve(Exit.OK);
    }
    default:
      return usage(command === undefined ? "tokens needs a command" : `unknown tokens command ${JSON.stringify(command)}`);
  }
}
