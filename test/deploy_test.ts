/**
 * keycell's Deno Deploy form (src/deploy/main.ts) run locally as `deno task deploy:local` runs it:
 * `deno serve` on a free loopback port over a Deno KV file, the master key from
 * KEYCELL_MASTER_KEY (made by `deno task deploy:master-key`), the tokens from KEYCELL_TOKENS. The
 * HTTP API with the statuses `serve` answers, signatures checked by openssl and WebCrypto, a restart
 * on the same KV file that keeps the keys, and the one-line refusals: no master key, a master key
 * the store's keys were not sealed under.
 */

import { assert, assertEquals } from "./_assert.ts";
import { type FixtureKey, makeKeys } from "./_fixtures.ts";
import { wrapForImport } from "./_wrap.ts";
import { apiClient, generate, signAndVerify } from "./_server.ts";
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

async function json(res: Response): Promise<Record<string, unknown>> {
  return await res.json();
}

const statusAndCode = async (res: Response) => [res.status, ((await json(res)).error as { code: string }).code];

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
      const anonymous = await fetch(`${server.url}/v1/keys`);
      assertEquals([anonymous.status, anonymous.headers.get("WWW-Authenticate"), (await json(anonymous)).error], [401, "Bearer", {
        code: "unauthorized",
        message: "a bearer token is required",
      }]);
      assertEquals(await statusAndCode(await apiClient(server, "not-the-token")("GET", "/v1/keys")), [401, "unauthorized"]);

      ec = await generate(api, "ECC_NIST_P256", root);
      rsa = await generate(api, "RSA_2048", root);

      // Wrapped import: openssl wraps a key to the guest's wrapping key.
      const wrapping = await api("GET", "/v1/wrapping-key");
      assertEquals(wrapping.status, 200);
      const wrappingSpki = Uint8Array.fromBase64((await json(wrapping)).publicKey as string);
      [p384] = await makeKeys(`${root}/fixtures`, ["ECC_NIST_P384"]);
      const wrapped = await wrapForImport(root, wrappingSpki, p384.path);
      const flipped = wrapped.slice();
      flipped[flipped.length - 1] ^= 1;
      assertEquals(await statusAndCode(await api("POST", "/v1/keys/import", { keySpec: "ECC_NIST_P384", wrappedKey: flipped.toBase64() })), [400, "bad_request"]);
      const imported = await api("POST", "/v1/keys/import", { keySpec: "ECC_NIST_P384", wrappedKey: wrapped.toBase64() });
      assertEquals([imported.status, (await json(imported)).id], [201, p384.id]);
      await signAndVerify(api, p384);

      const all = [ec.id, rsa.id, p384.id].sort();
      assertEquals(((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id), all);
      const paged: string[] = [];
      let cursor: unknown;
      for (let pages = 0; pages < 3; pages++) {
        const page = await json(await api("GET", `/v1/keys?limit=1${cursor ? `&cursor=${cursor}` : ""}`));
        paged.push(...(page.keys as { id: string }[]).map((k) => k.id));
        cursor = page.nextCursor;
      }
      assertEquals([paged, cursor], [all, undefined], "three pages of one, the last without a cursor");
      assertEquals((await api("GET", "/v1/keys?limit=0")).status, 400);

      const got = await api("GET", `/v1/keys/${rsa.id}`);
      assertEquals([got.status, await got.json()], [200, { id: rsa.id, keySpec: "RSA_2048", publicKey: rsa.spki.toBase64() }]);
      await signAndVerify(api, ec);
      await signAndVerify(api, rsa);

      const absent = "0".repeat(64);
      assertEquals(await statusAndCode(await api("GET", `/v1/keys/${absent}`)), [404, "key_not_found"]);
      assertEquals(await statusAndCode(await api("POST", `/v1/keys/${absent}/sign`, { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" })), [404, "key_not_found"]);
      assertEquals(await statusAndCode(await api("POST", "/v1/keys", { keySpec: "RSA_1024" })), [400, "bad_request"]);
      assertEquals(await statusAndCode(await api("POST", `/v1/keys/${ec.id}/sign`, { algorithm: "RSASSA_PSS_SHA_256", messageType: "RAW", message: "aGk=" })), [400, "bad_request"]);

      assertEquals((await api("DELETE", `/v1/keys/${ec.id}`)).status, 204);
      assertEquals(await statusAndCode(await api("GET", `/v1/keys/${ec.id}`)), [404, "key_not_found"]);
      assertEquals(await statusAndCode(await api("POST", `/v1/keys/${ec.id}/sign`, { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGk=" })), [404, "key_not_found"]);
      assertEquals(await statusAndCode(await api("DELETE", `/v1/keys/${ec.id}`)), [404, "key_not_found"]);
    } finally {
      assertEquals(await server.stop(), 0, "SIGTERM stops the guest, closes the store, exits 0");
    }

    // A restart on the same KV file: the keys open in a fresh guest; a token scoped to one key.
    const scopedToken = crypto.randomUUID();
    const restarted = { ...env, KEYCELL_TOKENS: tokens([{ name: "admin", token: admin, keys: "*" }, { name: "rsa-only", token: scopedToken, keys: [rsa.id] }]) };
    server = await startDeploy(restarted);
    try {
      const api = apiClient(server, admin);
      assertEquals(((await json(await api("GET", "/v1/keys"))).keys as { id: string }[]).map((k) => k.id), [rsa.id, p384.id].sort());
      const scoped = await json(await apiClient(server, scopedToken)("GET", "/v1/keys?limit=1"));
      assertEquals([(scoped.keys as { id: string }[]).map((k) => k.id), scoped.nextCursor], [[rsa.id], undefined], "only the token's key, no cursor");
      await signAndVerify(api, rsa);
      await signAndVerify(api, p384);
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
