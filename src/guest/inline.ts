/**
 * The `inline` transport: a guest instance in the host's own isolate, for runtimes without
 * Workers. The compartment keeps the instance in private fields; this transport holds only the
 * compartment's message function.
 *
 * @module
 */

import { openGuest } from "./files.ts";
import type { Guest } from "./family_guests.ts";
import type { KeyFileReport } from "../core/protocol.ts";
import { encodeResponse, Status } from "../core/protocol.ts";
import type { Transport } from "../core/signer_client.ts";

/** What a compartment needs to start. */
export interface StartOptions {
  /** The guest module's bytes (not secret). */
  wasm: Uint8Array;
  /**
   * A second module for RSA keys: with it, RSA keys live in an instance of this one and EC keys
   * in `wasm`'s (src/guest/family_guests.ts; `KEYCELL_GUEST=auto`).
   */
  rsaWasm?: Uint8Array;
  /** Directory of PEM/DER private keys to load into the guest. */
  keysDir?: string;
  /** The master key file the guest seals with; read straight into the guest. */
  masterKeyPath?: string;
  /** Instead of a file: the environment variable holding the master key (base64 or hex; see files.ts). */
  masterKeyEnv?: string;
  /** Let the guest create the master key file (first start only). */
  createMasterKey?: boolean;
  /** Budget of the guest's cache of unsealed keys, in bytes. */
  cacheBytes?: number;
}

/**
 * Runs the compartment in this isolate.
 *
 * @example
 * ```ts
 * const transport = InlineTransport.start({ wasm: Deno.readFileSync("wasm/signer.wasm") });
 * ```
 */
export class InlineTransport implements Transport {
  readonly mode = "inline";
  #handle: ((request: Uint8Array) => Uint8Array) | undefined;
  /** What loading the key directory did. */
  readonly keyFiles: readonly KeyFileReport[];

  private constructor(guest: Guest) {
    this.#handle = (request) => guest.handle(request);
    this.keyFiles = guest.keyFiles;
  }

  /** Instantiates the guest and loads the key directory. */
  static start(options: StartOptions): InlineTransport {
    return new InlineTransport(openGuest(options));
  }

  request(request: Uint8Array): Promise<Uint8Array> {
    return Promise.resolve(this.#handle ? this.#handle(request) : encodeResponse(Status.UNAVAILABLE));
  }

  /** Lets go of the compartment; later requests answer `UNAVAILABLE`. */
  close(): Promise<void> {
    this.#handle = undefined;
    return Promise.resolve();
  }
}
