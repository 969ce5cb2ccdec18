/**
 * `deno task fuzz:keyless [iterations] [seed]`: a longer fuzz run than CI's, against a key server
 * of its own (the real guest, keys from the openssl CLI, plain TCP on loopback). Prints the seed so
 * a failure can be replayed.
 *
 * @module
 */

import { makeKeys } from "./_fixtures.ts";
import { openCompartment } from "../src/guest/files.ts";
import { fuzzKeyless } from "../src/keyless/fuzz.ts";
import { keylessNames } from "../src/core/key_names.ts";
import { KeylessServer } from "../src/keyless/server.ts";
import { guestService, keyFinderFor } from "../src/keyless/_test_keys.ts";
import { wasmModule } from "./_wasm.ts";
import { tempDir } from "./_temp.ts";

const iterations = Number(Deno.args[0] ?? 20_000);
const seed = Number(Deno.args[1] ?? Date.now() % 1_000_000);
const root = await tempDir("keycell-fuzz-");
try {
  const keys = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256"]);
  const compartment = openCompartment({ wasm: wasmModule(), keysDir: `${root}/keys` });
  const server = new KeylessServer({ service: guestService((r) => compartment.handle(r)), keys: keyFinderFor(keys) });
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const skis = keys.map((k) => keylessNames(k.spki)!.ski);
  console.log(`fuzz:keyless: ${iterations} cases, seed ${seed}`);
  const started = performance.now();
  try {
    const report = await fuzzKeyless({ transport: "tcp", hostname: "127.0.0.1", port }, { iterations, seed, skis });
    console.log(`fuzz:keyless: ok in ${((performance.now() - started) / 1000).toFixed(1)} s`, JSON.stringify({ ...report, server: server.stats }));
  } finally {
    await server.close();
  }
} finally {
  await Deno.remove(root, { recursive: true });
}
