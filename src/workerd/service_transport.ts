/**
 * The api Worker's {@linkcode Transport}: protocol bytes to the signer Worker over a service
 * binding (JS RPC to its `WorkerEntrypoint`), so the api isolate never holds the guest.
 *
 * @module
 */

import { encodeResponse, Status } from "../core/protocol.ts";
import type { Transport } from "../core/signer_client.ts";
import { getLog } from "../core/log.ts";

const log = getLog();

/** The signer Worker's entrypoint as its service binding shows it. */
export interface SignerBinding {
  request(request: Uint8Array): Promise<Uint8Array>;
}

/**
 * Carries requests to the signer Worker; a call that fails (the signer isolate gone, the binding
 * broken) answers `UNAVAILABLE`, as the other transports do.
 *
 * @example
 * ```ts
 * import { ServiceTransport, type SignerBinding } from "./service_transport.ts";
 * import { ProtocolSignerClient } from "../core/signer_client.ts";
 *
 * // `env.SIGNER` is the api Worker's service binding to keycell-signer.
 * async function signerHealth(env: { SIGNER: SignerBinding }): Promise<void> {
 *   const client = new ProtocolSignerClient(new ServiceTransport(env.SIGNER));
 *   await client.health();
 * }
 * ```
 */
export class ServiceTransport implements Transport {
  readonly mode = "service";
  readonly #binding: SignerBinding;

  constructor(binding: SignerBinding) {
    this.#binding = binding;
  }

  async request(request: Uint8Array): Promise<Uint8Array> {
    try {
      return new Uint8Array(await this.#binding.request(request));
    } catch (err) {
      log.error(`the signer Worker did not answer: ${(err as Error).message}`);
      return encodeResponse(Status.UNAVAILABLE);
    }
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
