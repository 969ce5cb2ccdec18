import { assert, assertEquals } from "../../test/_assert.ts";
import { makeKeys, openssl } from "../../test/_fixtures.ts";
import { webCryptoVerify } from "../../test/_verify.ts";
import { runKeycell, startServer } from "../../test/_command.ts";
import { tempDir } from "../../test/_temp.ts";

Deno.test("keycell import-key wraps PEM and DER key files on the operator's side; the server signs with them", async () => {
  const dataDir = await tempDir("keycell-import-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" }, timeoutMs: 60_000 });
  try {
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    const [p256, rsa] = await makeKeys(`${dataDir}/fixtures`, ["ECC_NIST_P256", "RSA_2048"]);
    await openssl(["rsa", "-in", rsa.path, "-traditional", "-out", `${dataDir}/rsa-pkcs1.pem`]);
    await openssl(["ec", "-in", p256.path, "-outform", "DER", "-out", `${dataDir}/p256-sec1.der`]);
    for (const [file, key] of [[p256.path, p256], [`${dataDir}/rsa-pkcs1.pem`, rsa], [`${dataDir}/p256-sec1.der`, p256]] as const) {
      const out = await runKeycell("import-key", { args: [file, server.url], env: { KEYCELL_TOKEN: token } });
      const text = out.output;
      assertEquals(out.code, 0, text);
      assert(text.includes(`as ${key.keySpec} ${key.id}`), text);
    }
    const message = new TextEncoder().encode("imported by the CLI");
    for (const [key, algorithm] of [[p256, "ECDSA_SHA_256"], [rsa, "RSASSA_PSS_SHA_256"]] as const) {
      const res = await fetch(`${server.url}/v1/keys/${key.id}/sign`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ algorithm, messageType: "RAW", message: message.toBase64(), ...(key === p256 ? { signatureFormat: "RAW" } : {}) }),
      });
      assertEquals(res.status, 200);
      assert(await webCryptoVerify(key, algorithm, message, Uint8Array.fromBase64((await res.json()).signature)));
    }
    const listed = await (await fetch(`${server.url}/v1/keys`, { headers: { Authorization: `Bearer ${token}` } })).json();
    assertEquals(listed.keys.map((k: { id: string }) => k.id).sort(), [p256.id, rsa.id].sort(), "the same key twice is stored once");

    const [named] = await makeKeys(`${dataDir}/named`, ["ECC_NIST_P384"]);
    const out = await runKeycell("import-key", { args: [named.path, "--name", "site-2027", server.url, "--description", "the 2027 site key"], env: { KEYCELL_TOKEN: token } });
    assertEquals(out.code, 0, out.output);
    assert(out.output.includes(`as ECC_NIST_P384 ${named.id} named site-2027`), out.output);
    const shown = await (await fetch(`${server.url}/v1/keys/site-2027`, { headers: { Authorization: `Bearer ${token}` } })).json();
    assertEquals([shown.id, shown.name, shown.description], [named.id, "site-2027", "the 2027 site key"]);
    const missing = await runKeycell("import-key", { args: [named.path, server.url, "--name"], env: { KEYCELL_TOKEN: token } });
    assertEquals(missing.code, 1);
    assert(missing.output.includes("--name needs a value") && !missing.output.includes("    at "), missing.output);
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
