/**
 * `deno task fuzz:keyless [iterations] [seed]`: a longer fuzz run than CI's, against a key server
 * of its own (the real guest, with keys it generates itself, plain TCP on loopback). Prints the
 * seed so a failure can be replayed.
 *
 * @module
 */

import { Compartment } from "../guest/compartment.ts";
import { decodeKeyRecord, decodeResponse, encodeRequest, KEY_SPEC_CODES, type KeySpec, Op, Status } from "../guest/protocol.ts";
import { fuzzKeyless } from "./fuzz.ts";
import { certificateDigestName, keylessNames, keyNames, skiName } from "./keys.ts";
import { KeylessServer } from "./server.ts";

const iterations = Number(Deno.args[0] ?? 20_000);
const seed = Number(Deno.args[1] ?? Date.now() % 1_000_000);
const root = await Deno.makeTempDir({ prefix: "keycell-fuzz-" });
try {
  const wasm = Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url));
  // Generated keys are sealed, so the guest needs a master key: a throwaway one.
  const compartment = Compartment.create({ wasm, masterKeyPath: `${root}/master.key`, createMasterKey: true });
  const keys = (["RSA_2048", "ECC_NIST_P256"] as KeySpec[]).map((spec) => {
    const { status, body } = decodeResponse(compartment.handle(encodeRequest(Op.GENERATE, Uint8Array.of(KEY_SPEC_CODES[spec]))));
    const record = status === Status.OK ? decodeKeyRecord(body) : undefined;
    if (record === undefined) throw new Error(`the guest did not generate a ${spec} key (status ${status})`);
    return record;
  });
  const index = new Map(keys.flatMap(({ id, spki }) => keyNames(spki).map((name) => [name, id] as const)));
  const server = new KeylessServer({
    signer: (r) => compartment.handle(r),
    keys: { findKey: (by) => Promise.resolve(index.get(by.ski ? skiName(by.ski) : certificateDigestName(by.certificateDigest!))) },
  });
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
