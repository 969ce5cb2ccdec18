import { assert, assertEquals } from "../../test/_assert.ts";
import { startServer } from "../../test/_command.ts";
import { Exit, runKeys } from "./keys.ts";
import { tempDir } from "../../test/_temp.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Runs one `keycell keys` command in-process and keeps what it printed. */
async function keys(url: string, token: string | undefined, ...args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runKeys(args, { url, token, out: (l) => out.push(l), err: (l) => err.push(l), readFile: (p) => Deno.readFileSync(p) });
  return { code, out, err };
}

Deno.test("keycell keys: create, list, get, pubkey, sign, verify, jwks, jwk, delete against a running server; one-line errors and exit codes", async () => {
  const dataDir = await tempDir("keycell-cli-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
  try {
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    const created = await keys(server.url, token, "create", "ECC_NIST_P256", "--json");
    assertEquals(created.code, Exit.OK, created.err.join("\n"));
    const key = JSON.parse(created.out[0]);
    assertEquals(key.keySpec, "ECC_NIST_P256");

    const listed = await keys(server.url, token, "list");
    assertEquals(listed.out, [`${key.id}  ECC_NIST_P256`]);
    assertEquals(JSON.parse((await keys(server.url, token, "list", "--json")).out[0]).keys, [key]);
    const got = (await keys(server.url, token, "get", key.id)).out;
    assertEquals([got[0], got[1], got[2], got.at(-1)!.replace(/\S+$/, "TIME")], [
      `${key.id}  ECC_NIST_P256`,
      `  name         ${key.id}`,
      "  state        enabled",
      `  version 1    ${key.id}  primary  TIME`,
    ]);

    const pem = (await keys(server.url, token, "pubkey", key.id)).out.join("\n");
    assert(pem.startsWith("-----BEGIN PUBLIC KEY-----\n") && pem.endsWith("\n-----END PUBLIC KEY-----"), pem);
    const der = Uint8Array.fromBase64(pem.split("\n").slice(1, -1).join(""));
    assertEquals(der.toBase64(), key.publicKey);

    const signed = await keys(server.url, token, "sign", key.id, "ECDSA_SHA_256", "--message", "hello", "--raw-signature");
    assertEquals(signed.code, Exit.OK, signed.err.join("\n"));
    const publicKey = await crypto.subtle.importKey("spki", der, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    const verified = await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      publicKey,
      Uint8Array.fromBase64(signed.out[0]),
      new TextEncoder().encode("hello"),
    );
    assert(verified, "WebCrypto verifies the CLI's signature");

    const checked = await keys(server.url, token, "verify", key.id, "ECDSA_SHA_256", "--message", "hello", "--raw-signature", "--signature", signed.out[0]);
    assertEquals([checked.code, checked.out], [Exit.OK, ["valid"]], checked.err.join("\n"));
    const forged = await keys(server.url, token, "verify", key.id, "ECDSA_SHA_256", "--message", "hellO", "--raw-signature", "--signature", signed.out[0], "--json");
    assertEquals([forged.code, JSON.parse(forged.out[0]).valid], [Exit.INVALID, false]);
    assertEquals((await keys(server.url, token, "verify", key.id, "ECDSA_SHA_256", "--message", "hello")).code, Exit.USAGE, "no signature");

    const published = JSON.parse((await keys(server.url, token, "create", "ECC_NIST_P384", "--jwks", "--json")).out[0]);
    const jwksOf = async () => (await (await fetch(`${server.url}/.well-known/jwks.json`)).json()).keys.map((k: { kid: string }) => k.kid);
    assertEquals(await jwksOf(), [published.id]);
    assertEquals((await keys(server.url, token, "jwks", key.id, "on")).out, [`published ${key.id}`]);
    assertEquals((await jwksOf()).sort(), [key.id, published.id].sort());
    assertEquals((await keys(server.url, token, "jwks", published.id, "off")).code, Exit.OK);
    assertEquals(await jwksOf(), [key.id]);
    assertEquals((await keys(server.url, token, "jwks", key.id, "maybe")).code, Exit.USAGE);
    assertEquals(JSON.parse((await keys(server.url, token, "jwk", published.id)).out[0]).crv, "P-384");

    assertEquals((await keys(server.url, token, "delete", key.id, "--now")).out, [`deleted ${key.id}`]);
    const gone = await keys(server.url, token, "get", key.id);
    assertEquals([gone.code, gone.err], [Exit.FAILED, ["keycell: key_not_found: no key with that id"]]);
    const refused = await keys(server.url, "not-a-token", "list");
    assertEquals(refused.code, Exit.FAILED);
    assert(refused.err.length === 1 && refused.err[0].startsWith("keycell: unauthorized: "), refused.err.join("\n"));
    assertEquals((await keys(server.url, token, "create", "RSA_1024")).code, Exit.USAGE);
    assertEquals((await keys(server.url, token, "sign", key.id, "ECDSA_SHA_256")).code, Exit.USAGE, "no message");
    assertEquals((await keys(server.url, token, "rename")).code, Exit.USAGE);

    // Named keys: made with metadata, rotated, disabled and enabled, deletion scheduled and cancelled, deleted at once.
    const web = await keys(server.url, token, "create", "ECC_NIST_P256", "--name", "web", "--description", "the web key", "--label", "team=edge", "--label", "env=prod");
    assertEquals(web.code, Exit.OK, web.err.join("\n"));
    const [firstId] = web.out[0].split("  ");
    assertEquals(web.out, [`${firstId}  ECC_NIST_P256  web`]);
    assertEquals((await keys(server.url, token, "create", "ECC_NIST_P256", "--label", "novalue")).code, Exit.USAGE);
    const rotated = await keys(server.url, token, "rotate", "web", "--json");
    const details = JSON.parse(rotated.out[0]);
    assertEquals([details.name, details.versions.length, details.labels], ["web", 2, { env: "prod", team: "edge" }]);
    const shown = (await keys(server.url, token, "get", "web")).out;
    assertEquals(shown.slice(0, 2), [`${details.primary}  ECC_NIST_P256`, "  name         web"]);
    assert(shown.includes("  description  the web key") && shown.includes("  label        team=edge"), shown.join("\n"));
    assert(shown.some((l) => l.startsWith(`  version 1    ${firstId}`)) && shown.some((l) => l.startsWith(`  version 2    ${details.primary}  primary`)));
    const byName = await keys(server.url, token, "sign", "web", "ECDSA_SHA_256", "--message", "hello", "--json");
    assertEquals(JSON.parse(byName.out[0]).keyId, details.primary, "a name signs with its primary, and says which");
    assertEquals((await keys(server.url, token, "disable", "web")).out[2], "  state        disabled");
    const refusedSign = await keys(server.url, token, "sign", "web", "ECDSA_SHA_256", "--message", "hello");
    assertEquals([refusedSign.code, refusedSign.err[0].split(":").slice(0, 2)], [Exit.FAILED, ["keycell", " key_disabled"]]);
    assertEquals((await keys(server.url, token, "enable", "web")).out[2], "  state        enabled");
    assertEquals((await keys(server.url, token, "delete", "web", "--days", "3")).code, Exit.FAILED, "7 to 30 days");
    const scheduled = (await keys(server.url, token, "delete", "web", "--days", "7")).out[2];
    assert(/^ {2}state {8}pending_deletion \(deleted on \d{4}-\d\d-\d\dT.*Z\)$/.test(scheduled), scheduled);
    assertEquals((await keys(server.url, token, "cancel-deletion", "web")).out[2], "  state        disabled");
    assertEquals((await keys(server.url, token, "delete", "web", "--now")).out, ["deleted web"]);
    assertEquals((await keys(server.url, token, "get", firstId)).code, Exit.FAILED, "every version went");
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
  const closed = await keys(server.url, undefined, "list");
  assertEquals(closed.code, Exit.UNREACHABLE);
  assert(closed.err.length === 1 && closed.err[0].startsWith("keycell: signer_unavailable: cannot reach keycell at "), closed.err.join("\n"));
});

Deno.test("keycell --version, --help, and no command: usage rather than a server", async () => {
  const run = async (...args: string[]) => {
    const output = await new Deno.Command(Deno.execPath(), { args: ["run", "--allow-read", "--allow-env", "--allow-net", MAIN, ...args], stdin: "null" })
      .output();
    return { code: output.code, stdout: new TextDecoder().decode(output.stdout), stderr: new TextDecoder().decode(output.stderr) };
  };
  const version = await run("--version");
  assertEquals(version.code, 0);
  assert(/^keycell \d+\.\d+\.\d+\n$/.test(version.stdout), version.stdout);
  const help = await run("--help");
  assertEquals(help.code, 0);
  assert(help.stdout.includes("keys <command>"), help.stdout);
  const none = await run();
  assertEquals(none.code, 2);
  assert(none.stderr.startsWith("usage: keycell <command>"), none.stderr);
  const unknown = await run("frobnicate");
  assertEquals(unknown.code, 2);
  assert(unknown.stderr.startsWith('keycell: unknown command "frobnicate"'), unknown.stderr);
});
