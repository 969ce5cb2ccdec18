import { assert, assertEquals } from "../../test/_assert.ts";
import { ecdsaDerToRaw, makeKeys } from "../../test/_fixtures.ts";
import { KeylessClient } from "../keyless/client.ts";
import { Opcode } from "../keyless/codec.ts";
import { keylessNames } from "../core/key_names.ts";
import { startKeycell } from "../../test/_command.ts";
import { tempDir } from "../../test/_temp.ts";

Deno.test("keyserver command: signs on a pool of guests, KEYCELL_SIGNER_INSTANCES of them", async () => {
  const root = await tempDir("keycell-keyserver-pool-");
  const [key] = await makeKeys(root, ["ECC_NIST_P256"]);
  const keyserver = await startKeycell("keyserver", {
    env: {
      KEYCELL_DATA_DIR: `${root}/data`,
      KEYCELL_KEYS_DIR: `${root}/keys`,
      KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0",
      KEYCELL_SIGNER_INSTANCES: "2",
    },
    ready: /ready on .*tcp:127\.0\.0\.1:(\d+) \(keys: 1, guest: wide\) with 2 guests$/,
  });
  try {
    const { ready } = keyserver;
    const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(ready[1]) });
    const pub = await crypto.subtle.importKey("spki", key.spki, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    try {
      const messages = Array.from({ length: 40 }, (_, i) => new TextEncoder().encode(`handshake ${i}`));
      const answers = await Promise.all(messages.map(async (m) => {
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", m));
        return await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: keylessNames(key.spki)!.ski });
      }));
      for (const [i, res] of answers.entries()) {
        assert(res.kind === "ok", JSON.stringify(res));
        assert(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, ecdsaDerToRaw(res.payload, 32), messages[i]), `signature ${i}`);
      }
    } finally {
      client.close();
    }
  } finally {
    assertEquals(await keyserver.stop(), 0);
  }
});
