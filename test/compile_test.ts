/**
 * `deno task compile`: one binary holding keycell, the guest and the Worker entries.
 *
 * `deno compile` writes the program into a copy of Deno's runtime binary, `denort`, which it
 * downloads from Deno's release server for the target (or takes from `DENORT_BIN`). So:
 *
 * - the first test runs the task's own flags with a stand-in runtime (`/bin/true`): the module
 *   graph type-checks and everything the server reads at run time is embedded. It needs no
 *   network, so it always runs.
 * - the second builds the real binary and serves from it, in every signer mode, signing one
 *   P-256 message over HTTP and verifying it with WebCrypto. It needs the real runtime: it runs
 *   when `DENORT_BIN` names one or `deno compile` has one in its cache, and is ignored otherwise
 *   (it would have to download it, and tests reach no server but the ones they start).
 */

import { assert, assertEquals } from "./_assert.ts";
import { startProgram } from "./_command.ts";
import { tempDir } from "./_temp.ts";
import { ecdsaDerToRaw, webCryptoVerify } from "./_verify.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The arguments of `deno task compile` after `deno`, writing to `output` instead of dist/keycell. */
function compileArgs(output: string): string[] {
  const task: string = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks.compile;
  const words = task.split(/\s+/);
  assertEquals(words.slice(0, 2), ["deno", "compile"], task);
  const at = words.indexOf("--output");
  assert(at > 0, `the compile task names its output: ${task}`);
  words[at + 1] = output;
  return words.slice(1);
}

/** Runs the compile task; `denort` is the runtime to build on (undefined: deno compile's own). */
async function compile(output: string, denort?: string): Promise<{ code: number; output: string }> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  if (denort !== undefined) env.DENORT_BIN = denort;
  const out = await new Deno.Command(Deno.execPath(), { args: compileArgs(output), cwd: ROOT, env, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, output: text };
}

/**
 * The real runtime, when one is at hand without a download: `DENORT_BIN`, or the copy `deno
 * compile` keeps in its cache (`<DENO_DIR>/dl/release/v<version>/denort-<target>.zip`) after a
 * download. `null` when there is none.
 */
async function realRuntime(): Promise<{ denort?: string } | null> {
  const named = Deno.env.get("DENORT_BIN");
  if (named) return Deno.statSync(named).isFile ? { denort: named } : null;
  const info = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped", stderr: "null" }).output();
  const denoDir: string | undefined = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir;
  if (denoDir === undefined) return null;
  const cached = `${denoDir}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;
  return await Deno.stat(cached).then(() => ({}), () => null);
}

const runtime = await realRuntime();

Deno.test("deno task compile builds with the task's flags and embeds both guests, both Worker entries and the npm packages", async () => {
  const dir = await tempDir("keycell-compile-");
  // Any executable stands in for the runtime: the program and its files are appended to it.
  const { code, output } = await compile(`${dir}/keycell`, "/bin/true");
  assertEquals(code, 0, output);
  for (const embedded of ["signer.wasm (", "signer-wide.wasm (", "worker.ts (", "_sqlite_worker.ts (", "main.ts (", "node_modules/"]) {
    assert(output.includes(embedded), `${embedded} is embedded:\n${output}`);
  }
  // The listing shows node_modules as one line; the binary's file system (JSON, as Deno 2.9 writes
  // it) names a folder for each npm package of deno.json's imports.
  const binary = new TextDecoder("latin1").decode(await Deno.readFile(`${dir}/keycell`));
  const imports: Record<string, string> = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).imports;
  const packages = Object.values(imports).filter((target) => /^npm:[^/]/.test(target)).map((target) => target.slice(4).replace("/", "+"));
  assert(packages.some((name) => name.startsWith("hono@")), packages.join(", "));
  for (const name of packages) assert(binary.includes(`{"Dir":{"n":"${name}"`), `${name} is embedded`);
  assert((await Deno.stat(`${dir}/keycell`)).isFile);
});

Deno.test({
  name: "the compiled binary serves and signs a P-256 message in the inline, worker and process modes, the last on the wide guest (needs Deno's runtime binary: DENORT_BIN or deno compile's cache)",
  ignore: runtime === null,
  async fn() {
    const dir = await tempDir("keycell-compiled-");
    const binary = `${dir}/keycell`;
    const built = await compile(binary, runtime?.denort);
    assertEquals(built.code, 0, built.output);
    const version = await new Deno.Command(binary, { args: ["--version"], stdout: "piped" }).output();
    assert(/^keycell \d+\.\d+\.\d+\n$/.test(new TextDecoder().decode(version.stdout)), "the binary runs the command line");

    for (const mode of ["inline", "worker", "process"]) {
      const dataDir = `${dir}/data-${mode}`;
      const server = await startProgram({
        program: binary,
        args: ["serve"],
        // process mode asks for the wide guest: the key server, the binary itself, must find the
        // embedded wide module and run it under the V8 flag built in.
        env: {
          KEYCELL_DATA_DIR: dataDir,
          KEYCELL_LISTEN: "127.0.0.1:0",
          KEYCELL_SIGNER: mode,
          KEYCELL_SIGNER_INSTANCES: "1",
          ...(mode === "process" ? { KEYCELL_GUEST: "wide" } : {}),
        },
        ready: /keycell ready on (http:\/\/\S+) \(signer: (\w+), guest: (\w+)/,
        timeoutMs: 60_000,
      });
      try {
        const url = server.ready[1];
        assertEquals(server.ready[2], mode);
        assertEquals(server.ready[3], mode === "process" ? "wide" : "baseline");
        assertEquals((await fetch(`${url}/readyz`)).status, 200, `${mode}: the guest and the store answer`);
        const auth = { Authorization: `Bearer ${(await Deno.readTextFile(`${dataDir}/admin.token`)).trim()}`, "Content-Type": "application/json" };
        const created = await fetch(`${url}/v1/keys`, { method: "POST", headers: auth, body: JSON.stringify({ keySpec: "ECC_NIST_P256" }) });
        assertEquals(created.status, 201, `${mode}: ${await created.clone().text()}`);
        const key = await created.json();
        const message = new TextEncoder().encode(`signed by the compiled keycell in ${mode} mode`);
        const signed = await fetch(`${url}/v1/keys/${key.id}/sign`, {
          method: "POST",
          headers: auth,
          body: JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "RAW", message: message.toBase64() }),
        });
        assertEquals(signed.status, 200, `${mode}: ${await signed.clone().text()}`);
        const der = Uint8Array.fromBase64((await signed.json()).signature);
        const spki = Uint8Array.fromBase64(key.publicKey);
        assert(await webCryptoVerify({ spki }, "ECDSA_SHA_256", message, ecdsaDerToRaw(der, 32)), `${mode}: WebCrypto verifies the signature`);
      } finally {
        assertEquals(await server.stop(), 0, `${mode}: SIGTERM stops the binary cleanly`);
      }
    }
  },
});
