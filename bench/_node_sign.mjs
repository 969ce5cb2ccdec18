// node:crypto's side of the crypto-core benchmark: signs one digest-sized message in a loop for a
// fixed time with the key file given, and prints {"ops", "seconds", "cpuSeconds"} as JSON.
// usage: node _node_sign.mjs KEY.pem PKCS1|PSS|ECDSA sha256|sha384|sha512 SECONDS
import { createPrivateKey, constants, sign } from "node:crypto";
import { readFileSync } from "node:fs";

const [path, scheme, hash, seconds] = process.argv.slice(2);
const key = createPrivateKey(readFileSync(path));
const options = scheme === "PSS"
  ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
  : { key };
const message = Buffer.alloc({ sha256: 32, sha384: 48, sha512: 64 }[hash], 7);
const budgetNs = BigInt(Math.round(Number(seconds) * 1e9));
sign(hash, message, options); // warm-up, outside the timed loop
const cpu = process.cpuUsage();
const start = process.hrtime.bigint();
let ops = 0;
let elapsed = 0n;
while (elapsed < budgetNs) {
  sign(hash, message, options);
  ops++;
  elapsed = process.hrtime.bigint() - start;
}
const used = process.cpuUsage(cpu);
console.log(JSON.stringify({ ops, seconds: Number(elapsed) / 1e9, cpuSeconds: (used.user + used.system) / 1e6 }));
