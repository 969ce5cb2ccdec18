/**
 * keycell's Deno Deploy form (src/deploy/main.ts) run locally as `deno task deploy:local` runs it:
 * `deno serve` on a free loopback port over a Deno KV file, the master key from
 * KEYCELL_MASTER_KEY (made by `deno task deploy:master-key`), the tokens from KEYCELL_TOKENS. The
 * HTTP API with the statuses `serve` answers, signatures checked by openssl and WebCrypto, a restart
 * on the same KV file that keeps the keys, and the one-line refusals: no master key, a master key
 * the store's keys were not sealed under.
 */

import { assert, assertEquals } from "./_assert.ts";
import type { FixtureKey } from "./_fixtures.ts";
import { apiClient, generate, signAndVerify } from "./_server.ts";
import { checkAfterRestart, checkErrorsAndDelete, checkKeyRoutes, checkNamedKeys } from "./_http_conformance.ts";
import { type RunningServer, startProgram } from "./_command.ts";
import { tempDir } from "./_temp.ts";
import { sha256Hex } from "../src/host/auth.ts";

const DENO = Deno.execPath();
const ROOT = new URL("..", import.meta.url).pathname;
const TASKS: Record<string, string> = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)).tasks;

/** The words of a `deno <subcommand> ...` task after `deno`, with `--port 8000` made `--port 0`. */
function taskArgs(name: string): string[] {
  const words = TASKS[name].split(/\s+/);
  assertEquals(words[0], "deno", `the ${name} task runs deno`);
  const args = words.slice(1);
  const port = args.indexOf("--port");
  if (port >= 0) args[port + 1] = "0";
  return args;
}

/** Runs `deno <task args>` in the repository to completion. */
async function runTask(name: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(DENO, {
    args: taskArgs(name),
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

async function startDeploy(env: Record<string, string>): Promise<RunningServer> {
  const running = await startProgram({ program: DENO, args: taskArgs("deploy:local"), env, ready: /keycell ready on (http:\/\/\S+)/, timeoutMs: 60_000 });
  return { ...running, url: running.ready[1] };
}


function tokens(entries: { name: string; token: string; keys: "*" | string[] }[]): string {
  return JSON.stringify({ tokens: entries.map(({ name, token, keys }) => ({ name, sha256: sha256Hex(token), keys })) });
}

Deno.test("deploy (deno serve, worker): the HTTP API over Deno KV, keys kept across a restart, a missing or foreign master key refused", async () => {
  const root = await tempDir("keycell-deploy-");
  const kv = `${root}/keys.kv`;
  const admin = crypto.randomUUID();
  const base = { KEYCELL_KV_PATH: kv, KEYCELL_TOKENS: tokens([{ name: "admin", token: admin, keys: "*" }]) };
  try {
    const none = await runTask("deploy:local", base);
    assertEquals(none.code, 1, none.stderr);
    assertEquals(none.stderr.trim().split("\n").filter((l) => l.startsWith("keycell:")), [
      "keycell: cannot start: KEYCELL_MASTER_KEY is not set: make a master key with `deno task deploy:master-key` (the guest makes it and " +
      "prints it in base64) and keep it as a secret environment variable",
    ]);
    const made = await runTask("deploy:master-key", {});
    assertEquals(made.code, 0, made.stderr);
    const masterKey = made.stdout.trim();
    assertEquals(Uint8Array.fromBase64(masterKey).length, 32);
    assert(/a new master key \(id [0-9a-f]{64}\), printed once/.test(made.stderr), made.stderr);
    const env = { ...base, KEYCELL_MASTER_KEY: masterKey };

    let server = await startDeploy(env);
    let ec: FixtureKey;
    let rsa: FixtureKey;
    let p384: FixtureKey;
    try {
      const api = apiClient(server, admin);
      const health = await fetch(`${server.url}/healthz`);
      assertEquals([health.status, await health.json()], [200, { status: "ok", signer: "worker" }]);
      ({ ec, rsa, p384 } = await checkKeyRoutes(server, api, root));
      await checkErrorsAndDelete(api, ec);
      await checkNamedKeys(api);
    } finally {
      assertEquals(await server.stop(), 0, "SIGTERM stops the guest, closes the store, exits 0");
    }

    // A restart on the same KV file: the keys open in a fresh guest; a token scoped to one key.
    const scopedToken = crypto.randomUUID();
    const restarted = { ...env, KEYCELL_TOKENS: tokens([{ name: "admin", token: admin, keys: "*" }, { name: "rsa-only", token: scopedToken, keys: [rsa.id] }]) };
    server = await startDeploy(restarted);
    try {
      await checkAfterRestart(apiClient(server, admin), apiClient(server, scopedToken), rsa, [rsa, p384]);
    } finally {
      assertEquals(await server.stop(), 0);
    }

    // A master key other than the store's, and none at all over sealed keys: refused in one line.
    const foreign = await runTask("deploy:local", { ...env, KEYCELL_MASTER_KEY: crypto.getRandomValues(new Uint8Array(32)).toBase64() });
    assertEquals(foreign.code, 1, foreign.stderr);
    assert(/keycell: cannot start: the master key KEYCELL_MASTER_KEY \(id [0-9a-f]{64}\) is not the one the deno-kv key store's keys are sealed under/.test(foreign.stderr), foreign.stderr);
    const missing = await runTask("deploy:local", base);
    assertEquals(missing.code, 1, missing.stderr);
    assert(missing.stderr.includes("keycell: cannot start: KEYCELL_MASTER_KEY is not set, but the deno-kv key store holds 2 keys sealed under master key"), missing.stderr);
    const badKey = await runTask("deploy:local", { ...env, KEYCELL_MASTER_KEY: "not a key" });
    assertEquals(badKey.code, 1, badKey.stderr);
    assert(badKey.stderr.includes("keycell: cannot start: the signer worker did not start: the master key KEYCELL_MASTER_KEY must be base64"), badKey.stderr);
    assert(!badKey.stderr.includes("runs inline"), "a worker whose guest cannot start is no reason to go inline");
    const malformed = await runTask("deploy:local", { ...env, KEYCELL_TOKENS: "{}" });
    assertEquals(malformed.code, 1, malformed.stderr);
    assert(malformed.stderr.includes("keycell: cannot start: KEYCELL_TOKENS: tokens:"), malformed.stderr);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("deploy (deno serve, inline): the guest in the server's isolate, a key kept across a restart", async () => {
  const root = await tempDir("keycell-deploy-inline-");
  const admin = crypto.randomUUID();
  const masterKey = (await runTask("deploy:master-key", {})).stdout.trim();
  const env = {
    KEYCELL_KV_PATH: `${root}/keys.kv`,
    KEYCELL_TOKENS: tokens([{ name: "admin", token: admin, keys: "*" }]),
    KEYCELL_MASTER_KEY: masterKey,
    KEYCELL_SIGNER: "inline",
  };
  try {
    let server = await startDeploy(env);
    let ec: FixtureKey;
    try {
      assertEquals(await (await fetch(`${server.url}/healthz`)).json(), { status: "ok", signer: "inline" });
      ec = await generate(apiClient(server, admin), "ECC_NIST_P256", root);
      await signAndVerify(apiClient(server, admin), ec);
    } finally {
      assertEquals(await server.stop(), 0);
    }
    server = await startDeploy(env);
    try {
      await signAndVerify(apiClient(server, admin), ec);
    } finally {
      assertEquals(await server.stop(), 0);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
