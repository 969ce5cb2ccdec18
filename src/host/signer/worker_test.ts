import { assertEquals } from "../../../test/_assert.ts";
import { makeKeys } from "../../../test/_fixtures.ts";
import { ProtocolSignerClient } from "./client.ts";
import { WorkerTransport } from "./worker.ts";

const WASM = Deno.readFileSync(new URL("../../../wasm/signer.wasm", import.meta.url));

Deno.test("worker: requests sent together travel in one batch and every answer reaches its own caller", async () => {
  const root = await Deno.makeTempDir();
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
