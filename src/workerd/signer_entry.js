// The signer Worker's entry module. The guest is imported so the platform compiles it when the
// Worker is loaded (uploaded, on Cloudflare): edge runtimes refuse to compile wasm at run time.
// @ts-ignore: edge:build copies the guest beside the bundled entry; it is not in src/.
import guest from "./signer.wasm";
import { Signer, useGuest } from "./signer_worker.ts";

useGuest(guest);

export { Signer };
