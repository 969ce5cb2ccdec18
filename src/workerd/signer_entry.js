// The signer Worker's entry module. The guest is imported so the platform compiles it when the
// Worker is loaded (uploaded, on Cloudflare): edge runtimes refuse to compile wasm at run time.
import guest from "./signer.wasm";
import { Signer, useGuest } from "./signer_worker.ts";

useGuest(guest);

export { Signer };
