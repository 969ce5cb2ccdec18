/**
 * The `keycell-signer` Worker: the guest, behind a `WorkerEntrypoint` the api Worker calls over a
 * service binding. It has no socket and no outbound network; its master key comes from the
 * `SECRETS` binding (a read-only `disk` service on workerd) or, on Cloudflare, the `MASTER_KEY`
 * secret, which no other Worker has.
 *
 * @module
 */

import { WorkerEntrypoint } from "cloudflare:workers";
import { type Fetcher, SignerService } from "./signer_service.ts";
import { configureWorkerLogging, type LogEnv } from "./log.ts";

/** The signer Worker's bindings. */
export interface SignerEnv extends LogEnv {
  /** Self-hosted: a read-only `disk` service serving `master.key`. */
  SECRETS?: Fetcher;
  /** On Cloudflare instead: a secret holding the master key as 64 hex digits. */
  MASTER_KEY?: string;
  /** Hex id of the master key the store's keys are sealed under; every load is checked against it. */
  MASTER_KEY_ID?: string;
  /** Budget of the guest's cache of unsealed keys, in bytes (an isolate has 128 MB on Cloudflare). */
  KEY_CACHE_BYTES?: string;
}

/** URL of the master key on the `SECRETS` binding. */
export const MASTER_KEY_URL = "http://secrets/master.key";

let guest: WebAssembly.Module | undefined;
let service: SignerService | undefined;

/**
 * Hands over the guest module, compiled by the platform from the imported `.wasm` (compiling at
 * run time is refused). Called once by the Worker's entry module.
 *
 * @example
 * ```ts
 * import { useGuest } from "./signer_worker.ts";
 *
 * // The entry module does this once with the guest it imports (`import guest from "./signer.wasm"`),
 * // which the platform compiles when it loads the Worker.
 * function start(guest: WebAssembly.Module): void {
 *   useGuest(guest);
 * }
 * ```
 */
export function useGuest(module: WebAssembly.Module): void {
  guest = module;
}

/** The signer's RPC entrypoint. */
export class Signer extends WorkerEntrypoint {
  /** Answers one protocol request with the response bytes. */
  request(request: Uint8Array): Promise<Uint8Array> {
    const env = (this as unknown as { env: SignerEnv }).env;
    configureWorkerLogging(env);
    service ??= new SignerService({
      module: guest!,
      masterKey: env.SECRETS !== undefined
        ? { secrets: env.SECRETS, url: MASTER_KEY_URL }
        : { secret: env.MASTER_KEY ?? "", name: "secret MASTER_KEY" },
      masterKeyId: env.MASTER_KEY_ID || undefined,
      cacheBytes: env.KEY_CACHE_BYTES ? Number(env.KEY_CACHE_BYTES) : undefined,
    });
    return service.request(request);
  }
}
