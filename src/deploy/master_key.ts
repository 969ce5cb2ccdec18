/**
 * `deno task deploy:master-key`: has the guest make a new master key and prints it once, in base64,
 * for a secret environment variable (KEYCELL_MASTER_KEY on Deno Deploy). The key is made inside the
 * guest, as `serve` makes master.key on a first start; it then leaves the guest once, through this
 * program's output, and lives on as the platform's secret (a string the platform keeps).
 *
 * @module
 */

import { Compartment } from "../guest/compartment.ts";

if (import.meta.main) {
  const wasm = await Deno.readFile(new URL("../../wasm/signer.wasm", import.meta.url));
  let printed = false;
  const compartment = Compartment.create({
    wasm,
    createMasterKey: true,
    masterKey: {
      name: "a new master key",
      size: () => undefined,
      read: () => {
        throw new Error("no master key to read: this program makes one");
      },
      create(key) {
        console.log(key.toBase64());
        printed = true;
      },
    },
  });
  if (!printed) throw new Error("the guest made no master key");
  console.error(
    `keycell: a new master key (id ${compartment.masterKeyId}), printed once: keep it as the secret KEYCELL_MASTER_KEY; ` +
      "sealed keys open only with it",
  );
}
