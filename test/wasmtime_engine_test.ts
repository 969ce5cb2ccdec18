// The key server and `serve` in process mode with KEYCELL_ENGINE=wasmtime: the same Keyless and
// HTTP suites the V8 engine passes, each guest a wasmtime child of the key server.

import { assert, assertEquals } from "./_assert.ts";
import { makeKeys } from "./_fixtures.ts";
import { signEveryOpcode } from "./_keyless_sign.ts";
import { checkServeAcrossRestart } from "./_http_conformance.ts";
import { apiClient, signEveryWay } from "./_server.ts";
import { alive, startKeycell, startServer, wasmtimeChildren } from "./_command.ts";
import { tempDir } from "./_temp.ts";
import { KeylessClient } from "../src/keyless/client.ts";
import { ErrorCode, Opcode } from "../src/keyless/codec.ts";
import { keylessNames } from "../src/core/key_names.ts";
import { ProcessKeyService } from "../src/deno/process_transport.ts";

const ENGINE = { KEYCELL_ENGINE: "wasmtime" };

Deno.test("keyserver (wasmtime): every sign opcode, guest errors, a trap, a restart over the same store; KEYCELL_SIGNER_INSTANCES children", async () => {
  const root = await tempDir("keycell-wasmtime-keyserver-");
  const [rsa, p256, p384] = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"]);
  const env = {
    ...ENGINE,
    KEYCELL_DATA_DIR: `${root}/data`,
    KEYCELL_KEYS_DIR: `${root}/keys`,
    KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0",
    KEYCELL_SIGNER_INSTANCES: "2",
  };
  const ready = /ready on unix:(\S+), tcp:127\.0\.0\.1:(\d+) \(keys: (\d+), guest: (\w+), engine: wasmtime\) with 2 guests/;
  let keyserver = await startKeycell("keyserver", { env: { ...env, KEYCELL_GUEST: "wide" }, ready });
  let generated: string;
  try {
    assertEquals(keyserver.ready.slice(3), ["3", "wide"]);
    assertEquals(wasmtimeChildren(keyserver.pid).length, 2, "one wasmtime child per guest");
    const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(keyserver.ready[2]) });
    try {
      await signEveryOpcode(client, { rsa, p256, p384 });
      const d32 = new Uint8Array(32).fill(1);
      const code = async (request: Parameters<KeylessClient["request"]>[0]) => {
        const res = await client.request(request);
        return res.kind === "error" ? res.code : res.kind;
      };
      assertEquals(await code({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, ski: new Uint8Array(20) }), ErrorCode.KEY_NOT_FOUND);
      assertEquals(await code({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(31), ski: keylessNames(p256.spki)!.ski }), ErrorCode.FORMAT);
      assertEquals(await code({ opcode: Opcode.RSA_SIGN_SHA256, payload: d32, ski: keylessNames(p256.spki)!.ski }), ErrorCode.CRYPTO_FAILED);
    } finally {
      client.close();
    }
    // A key made in a wasmtime guest, through the key-service RPC `serve` uses; then a trap.
    const service = await ProcessKeyService.start({ socketPath: keyserver.ready[1] });
    try {
      generated = (await service.generate("ECC_NIST_P256")).id;
      assertEquals((await service.injectTrap()).code, "internal", "the trapped request fails; the guest is re-created");
      await service.sign({ keyId: generated, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32) });
    } finally {
      await service.close();
    }
  } finally {
    assertEquals(await keyserver.stop(), 0);
  }

  // Restarted with the 32-bit guest: the generated key opens from the store, by SKI over Keyless.
  keyserver = await startKeycell("keyserver", { env, ready });
  const children = wasmtimeChildren(keyserver.pid);
  try {
    assertEquals(keyserver.ready.slice(3), ["4", "baseline"]);
    const service = await ProcessKeyService.start({ socketPath: keyserver.ready[1] });
    const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(keyserver.ready[2]) });
    try {
      const key = await service.getKey(generated);
      const res = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32).fill(2), ski: keylessNames(key.publicKey)!.ski });
      assert(res.kind === "ok", `the stored key signs after the restart: ${JSON.stringify(res)}`);
    } finally {
      client.close();
      await service.close();
    }
  } finally {
    assertEquals(await keyserver.stop(), 0);
  }
  // Their stdin closes with the key server, and they exit.
  for (let i = 0; i < 100 && children.some(alive); i++) await new Promise((r) => setTimeout(r, 20));
  assertEquals(children.filter(alive), [], "the wasmtime children end with the key server");
});

Deno.test("serve (process, wasmtime): the HTTP checks every engine passes, every algorithm, then after a restart with a scoped token", async () => {
  await checkServeAcrossRestart("keycell-wasmtime-serve-", { ...ENGINE, KEYCELL_SIGNER: "process", KEYCELL_SIGNER_INSTANCES: "2" }, true);
});

Deno.test("serve (worker, wasmtime): its guests are wasmtime children; keys from the directory and generated ones sign every way", async () => {
  const dataDir = await tempDir("keycell-wasmtime-worker-");
  const [p384] = await makeKeys(dataDir, ["ECC_NIST_P384"]);
  const server = await startServer({ dataDir, env: { ...ENGINE, KEYCELL_SIGNER: "worker", KEYCELL_SIGNER_INSTANCES: "2", KEYCELL_KEYS_DIR: `${dataDir}/keys` } });
  try {
    assert(server.lines.some((l) => /keycell ready on .*guest: baseline, engine: wasmtime/.test(l)), server.lines.join("\n"));
    assertEquals(wasmtimeChildren(server.pid).length, 2, "one wasmtime child per guest, none in serve's isolate");
    const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
    const generated = await api("POST", "/v1/keys", { keySpec: "RSA_2048" });
    assertEquals(generated.status, 201);
    for (const key of [p384, await generated.json()]) await signEveryWay(api, key);
  } finally {
    assertEquals(await server.stop(), 0);
  }
});
