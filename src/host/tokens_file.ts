/**
 * The `tokens.json` form (names, SHA-256 hashes, scopes and rates) and its check, with no file or
 * platform API: `serve` reads it from the data directory (src/deno/tokens.ts), the workerd api
 * Worker from its `TOKENS` binding.
 *
 * @module
 */

import { z } from "zod";
import type { TokenEntry } from "./auth.ts";
import { KEY_NAME_PATTERN } from "../core/key_service.ts";

const HEX64 = /^[0-9a-f]{64}$/;

/** The shape of `tokens.json`. */
export const TokensFile = z.object({
  tokens: z.array(
    z.object({
      name: z.string().min(1).max(64).regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' and '-' only"),
      sha256: z.string().regex(HEX64, "64 lowercase hex digits (printf %s TOKEN | sha256sum)"),
      keys: z.union([
        z.literal("*"),
        z.array(z.string().refine((k) => HEX64.test(k) || KEY_NAME_PATTERN.test(k), "a key id (64 lowercase hex digits) or a key name")),
      ]),
      rate: z.object({ perSecond: z.number().positive(), burst: z.number().positive().optional() }).strict().optional(),
    }).strict(),
  ).superRefine((tokens, ctx) => {
    const seen = new Set<string>();
    tokens.forEach((t, i) => {
      if (seen.has(t.name)) ctx.addIssue({ code: "custom", path: [i, "name"], message: `a second token named ${JSON.stringify(t.name)}` });
      seen.add(t.name);
    });
  }),
}).strict();

/**
 * Parses and checks the text of a `tokens.json`; `source` names where it came from in errors.
 * Throws one message naming every problem (`tokens.json: tokens[0].keys: ...`) for text of the
 * wrong shape.
 *
 * @example
 * ```ts
 * import { parseTokensFile } from "./tokens_file.ts";
 *
 * parseTokensFile('{"tokens": []}', "tokens.json"); // []
 * ```
 */
export function parseTokensFile(text: string, source: string): TokenEntry[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`${source}: not JSON (${(err as Error).message})`);
  }
  const checked = TokensFile.safeParse(parsed);
  if (!checked.success) {
    const problems = checked.error.issues.map((i) => `${i.path.map((p) => typeof p === "number" ? `[${p}]` : `.${String(p)}`).join("").replace(/^\./, "")}: ${i.message}`);
    throw new Error(`${source}: ${problems.join("; ")}`);
  }
  return checked.data.tokens;
}
