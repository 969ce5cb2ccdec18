import { assertEquals } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { ProtocolSignerClient } from "../core/signer_client.ts";
import { WorkerTransport } from "./worker_transport.ts";
import { WASM } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";


Deno.test("worker: 200 requests in flight at once, each answer reaches its own caller", async () => {
  const root = await tempDir();
  const keys = await makeKeys(root, ["ECC_NIST_P256", "ECC_NIST_P384"]);
  const transport = await WorkerTransport.start({ wasm: WASM, keysDir: `${root}/keys` });
  const client = new ProtocolSignerClient(transport);
  try {
    // 200 look-ups at once, alternating keys, plus unknown ids mixed in: each must get its own answer.
    const ids = Array.from({ length: 200 }, (_, i) => i % 5 === 4 ? "ee".repeat(32) : keys[i % 2].id);
    const answers = await Promise.all(ids.map((id) => client.getKey(id).then((k) => k.id, (err) => err.code)));
    assertEquals(answers, ids.map((id) => id === "ee".repeat(32) ? "key_not_found" : id));
  } finally {
    await client.close();
  }
});

Deno.test("worker: requests that do not fit in a small ring wait their turn and are all answered", async () => {
  const root = await tempDir();
  const [p256] = await makeKeys(root, ["ECC_NIST_P256"]);
  // 256 bytes hold three sign requests (36 + 32 bytes, 72 with the header), so most queue in the host.
  const transport = await WorkerTransport.start({ wasm: WASM, keysDir: `${root}/keys` }, { ringBytes: 256 });
  const client = new ProtocolSignerClient(transport);
  try {
    const signatures = await Promise.all(Array.from({ length: 100 }, (_, i) =>
      client.sign({ keyId: p256.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32).fill(i) })));
    assertEquals(signatures.filter((s) => s[0] === 0x30).length, 100, "every answer is a DER signature");
    const tooLarge = await client.sign({ keyId: p256.id, algorithm: "ECDSA_SHA_256", messageType: "RAW", message: new Uint8Array(300) })
      .then(() => "signed", (err) => err.code);
    assertEquals(tooLarge, "bad_request", "a request larger than the ring is refused, not queued forever");
  } finally {
    await client.close();
  }
});
