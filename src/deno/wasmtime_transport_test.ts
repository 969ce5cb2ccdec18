import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { ProtocolSignerClient } from "../core/signer_client.ts";
import { decodeKeyRecord, decodeResponse, encodeRequest, KEY_SPEC_CODES, keyIdBytes, Op, Status } from "../core/protocol.ts";
import type { Transport } from "../core/signer_client.ts";
import { PoolTransport } from "./pool.ts";
import { WasmtimeTransport } from "./wasmtime_transport.ts";
import { alive } from "../../test/_command.ts";
import { WASM } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";

const WIDE = Deno.readFileSync(new URL("../../wasm/signer-wide.wasm", import.meta.url));
const root = await tempDir("keycell-wasmtime-");
const keys = await makeKeys(root, ["ECC_NIST_P256", "RSA_2048"]);
const [p256, rsa] = keys;
const digest = new Uint8Array(32).fill(7);

/** Sends one request; its body, or a failure naming the status. */
async function ok(transport: Transport, op: Op, ...parts: Uint8Array[]): Promise<Uint8Array> {
  const { status, body } = decodeResponse(await transport.request(encodeRequest(op, ...parts)));
  assertEquals(status, Status.OK, `op ${op}`);
  return body;
}

for (const [guest, wasm] of [["baseline", WASM], ["wide", WIDE]] as const) {
  Deno.test(`wasmtime (${guest}): the master key made once and read back, the key directory loaded, a trap answered and the guest re-created`, async () => {
    const dir = await tempDir("keycell-wasmtime-master-");
    const masterKeyPath = `${dir}/master.key`;
    const first = await WasmtimeTransport.start({ wasm, masterKeyPath, createMasterKey: true });
    const made = await ok(first, Op.MASTER_KEY_ID);
    await first.close();
    assertEquals((await Deno.stat(masterKeyPath)).mode! & 0o777, 0o600, "the master key file is private");

    const transport = await WasmtimeTransport.start({ wasm, masterKeyPath, keysDir: `${root}/keys` });
    const client = new ProtocolSignerClient(transport);
    try {
      assertEquals(await ok(transport, Op.MASTER_KEY_ID), made, "the same master key, read from its file");
      assertEquals(transport.keyFiles.map((f) => f.id).sort(), keys.map((k) => k.id).sort());
      const generated = decodeKeyRecord(await ok(transport, Op.GENERATE, new Uint8Array([KEY_SPEC_CODES.ECC_NIST_P256])))!;
      assert(generated.sealed !== undefined, "sealed under the master key");
      const pid = transport.pid;

      const trapped = decodeResponse(await transport.request(encodeRequest(Op.TRAP)));
      assertEquals(trapped.status, Status.GUEST_TRAPPED);
      assertEquals(transport.pid, pid, "re-instantiated in the same process");
      assertEquals((await client.listKeys()).map((k) => k.id).sort(), keys.map((k) => k.id).sort(), "the key directory again, the generated key gone");
      await ok(transport, Op.UNSEAL, keyIdBytes(generated.id)!, generated.sealed!);
      for (const key of [p256, rsa, generated]) {
        const algorithm = key.keySpec === "RSA_2048" ? "RSASSA_PSS_SHA_256" : "ECDSA_SHA_256";
        assert((await client.sign({ keyId: key.id, algorithm, messageType: "DIGEST", message: digest })).length > 0);
      }
      assertEquals(await ok(transport, Op.MASTER_KEY_ID), made);
    } finally {
      await client.close();
    }
  });
}

Deno.test("wasmtime: a child that dies is replaced and the new one signs; a closed transport answers UNAVAILABLE", async () => {
  const transport = await WasmtimeTransport.start({ wasm: WASM, keysDir: `${root}/keys` });
  const client = new ProtocolSignerClient(transport);
  try {
    const first = transport.pid;
    Deno.kill(first, "SIGKILL");
    while (alive(first)) await new Promise((r) => setTimeout(r, 20));
    let signed = false;
    for (let i = 0; i < 50 && !signed; i++) {
      signed = await client.sign({ keyId: p256.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: digest }).then(() => true, () => false);
      if (!signed) await new Promise((r) => setTimeout(r, 100));
    }
    assert(signed, "the new child signs with the key directory");
    assertEquals(transport.restarts, 1);
    assert(transport.pid !== first);
  } finally {
    await client.close();
  }
  assertEquals(decodeResponse(await transport.request(encodeRequest(Op.HEALTH))).status, Status.UNAVAILABLE);
});

Deno.test("wasmtime: a module that is not a keycell guest is refused at start; a host that is not built is named", async () => {
  const empty = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);
  await assertRejects(() => WasmtimeTransport.start({ wasm: empty }), Error, "kc_load");
  await assertRejects(() => WasmtimeTransport.start({ wasm: WASM }, { hostPath: "/nonexistent/keycell-wasmtime-host" }), Error, "build:wasmtime-host");
});

Deno.test("wasmtime: a pool of two children, 200 requests in flight, each answer reaches its own caller", async () => {
  const pool = await PoolTransport.start({ wasm: WIDE, keysDir: `${root}/keys` }, { instances: 2, startMember: (o) => WasmtimeTransport.start(o) });
  const client = new ProtocolSignerClient(pool);
  try {
    const ids = Array.from({ length: 200 }, (_, i) => i % 5 === 4 ? "ee".repeat(32) : keys[i % 2].id);
    const answers = await Promise.all(ids.map((id) => client.getKey(id).then((k) => k.id, (err) => err.code)));
    assertEquals(answers, ids.map((id) => id === "ee".repeat(32) ? "key_not_found" : id));
    const signatures = await Promise.all(Array.from({ length: 40 }, (_, i) =>
      client.sign({ keyId: p256.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(i) })));
    assertEquals(signatures.filter((s) => s[0] === 0x30).length, 40, "every answer is a DER signature");
    assertEquals(pool.outstanding.length, 2);
  } finally {
    await client.close();
  }
});
