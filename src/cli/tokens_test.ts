import { assert, assertEquals, assertThrows } from "../../test/_assert.ts";
import { startServer } from "../../test/_command.ts";
import { sha256Hex } from "../host/auth.ts";
import { loadTokens, readTokensFile } from "../deno/tokens.ts";
import { Exit } from "./keys.ts";
import { runTokens } from "./tokens.ts";
import { tempDir } from "../../test/_temp.ts";

async function tokens(dataDir: string, ...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runTokens(args, { dataDir, out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

Deno.test("keycell tokens: create prints the token once and stores its hash; list; revoke; mistakes are named", async () => {
  const dir = await tempDir("keycell-tokens-");
  try {
    const id = "ab".repeat(32);
    const created = await tokens(dir, "create", "edge-eu", "--keys", id, "--rate", "50:100");
    assertEquals(created.code, Exit.OK, created.err.join("\n"));
    const [token] = created.out;
    assertEquals(readTokensFile(dir), [{ name: "edge-eu", sha256: sha256Hex(token), keys: [id], rate: { perSecond: 50, burst: 100 } }]);
    assert(!(await Deno.readTextFile(`${dir}/tokens.json`)).includes(token), "the token itself is never stored");
    assertEquals((await Deno.stat(`${dir}/tokens.json`)).mode! & 0o777, 0o600);
    assertEquals(loadTokens(dir).store.authenticate(`Bearer ${token}`).name, "edge-eu");

    assertEquals((await tokens(dir, "create", "ops")).code, Exit.OK);
    assertEquals((await tokens(dir, "list")).out, ["edge-eu  1 key, 50/s (burst 100)", "ops  every key"]);
    assertEquals((await tokens(dir, "create", "ops")).code, Exit.FAILED, "names are unique");
    const badKey = await tokens(dir, "create", "x", "--keys", "not/a/key");
    assertEquals(badKey.code, Exit.USAGE);
    assert(badKey.err[0].includes("a key id (64 lowercase hex digits) or a key name"), badKey.err.join("\n"));
    assertEquals(readTokensFile(dir)!.map((t) => t.name), ["edge-eu", "ops"], "a refused token leaves the file as it was");
    assertEquals((await tokens(dir, "revoke", "ops")).out, ["revoked ops"]);
    assertEquals((await tokens(dir, "revoke", "ops")).code, Exit.FAILED);
    assertEquals(readTokensFile(dir)!.map((t) => t.name), ["edge-eu"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokens.json of the wrong shape stops loading with a message naming what is wrong", async () => {
  const dir = await tempDir("keycell-tokens-");
  try {
    const write = (value: unknown) => Deno.writeTextFileSync(`${dir}/tokens.json`, JSON.stringify(value));
    write({ tokens: [{ name: "a", sha256: "0".repeat(64), keys: "all" }] });
    assertThrows(() => loadTokens(dir), /tokens\[0\]\.keys/);
    write({ tokens: [{ sha256: "0".repeat(64), keys: "*" }] });
    assertThrows(() => loadTokens(dir), /tokens\[0\]\.name/);
    write({ tokens: [{ name: "a", sha256: "0".repeat(64), keys: "*", scope: "x" }] });
    assertThrows(() => loadTokens(dir), /scope/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a running serve picks up tokens created and revoked with keycell tokens, without a signal", async () => {
  const dataDir = await tempDir("keycell-tokens-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
  const status = async (token: string) => {
    const res = await fetch(`${server.url}/v1/keys`, { headers: { Authorization: `Bearer ${token}` } });
    await res.body?.cancel();
    return res.status;
  };
  /** Polls until the server answers `want` (it reloads within moments of the change). */
  const until = async (token: string, want: number) => {
    for (let i = 0; i < 100 && await status(token) !== want; i++) await new Promise((r) => setTimeout(r, 50));
    return await status(token);
  };
  try {
    const created = await tokens(dataDir, "create", "ci");
    assertEquals(await until(created.out[0], 200), 200, "the new token is accepted:\n" + server.lines.join("\n"));
    await tokens(dataDir, "revoke", "ci");
    assertEquals(await until(created.out[0], 401), 401, "the revoked token is refused");
    assertEquals(await status((await Deno.readTextFile(`${dataDir}/admin.token`)).trim()), 200, "the admin token stays");
    assert(server.lines.some((l) => l.startsWith("keycell: reloaded the tokens")), server.lines.join("\n"));
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
