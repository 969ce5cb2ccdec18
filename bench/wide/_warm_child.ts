// Child of _x64_code.ts: drives a signer module under default tiering
// (Liftoff collects feedback, hot functions go to the optimizing tier with
// inlining) through every key type, signing and generating, then says so and
// waits for stdin to close.
import { Alg, FLAG_RS, Guest, opensslKey } from "./_host.ts";

const g = new Guest(new WebAssembly.Module(Deno.readFileSync(Deno.args[0])));
const SIGNS = 300;
const RUNS = [
  ["rsa2048", Alg.RSA_PKCS1_SHA256, 32],
  ["p256", Alg.ECDSA_SHA256, 32],
  ["p384", Alg.ECDSA_SHA384, 48],
  ["rsa3072", Alg.RSA_PSS_SHA256, 32],
  ["rsa4096", Alg.RSA_PKCS1_SHA256, 32],
] as const;
for (const [kind, alg, digestLength] of RUNS) {
  const { id } = g.load(opensslKey(kind));
  const n = kind === "rsa4096" ? SIGNS / 3 : SIGNS;
  for (let i = 0; i < n; i++) g.sign(id, alg, crypto.getRandomValues(new Uint8Array(digestLength)), FLAG_RS);
}
for (const spec of [1, 4, 5]) g.ok("kc_generate", new Uint8Array([spec]));
console.log("COMPILED");
for await (const _ of Deno.stdin.readable) { /* wait */ }
