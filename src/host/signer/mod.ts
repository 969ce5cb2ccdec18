/**
 * Starts the signer client a configuration asks for.
 *
 * @module
 */

import { ProtocolSignerClient } from "./client.ts";
import type { KeyFileReport } from "../../guest/compartment.ts";
import { InlineTransport } from "./inline.ts";
import type { StartOptions } from "./inline.ts";
import { WorkerTransport } from "./worker.ts";

export type { KeyInfo, SignerClient, SignRequest } from "./client.ts";

/** The signer modes `KEYCELL_SIGNER` may name. */
export type SignerMode = "worker" | "inline";

/**
 * Starts a signer in the given mode and reports what loading the key directory did.
 *
 * @example
 * ```ts
 * const { client, keyFiles } = await startSigner("worker", { wasm, keysDir: ".keycell/keys" });
 * ```
 */
export async function startSigner(
  mode: SignerMode,
  options: StartOptions,
): Promise<{ client: ProtocolSignerClient; keyFiles: readonly KeyFileReport[] }> {
  const transport = mode === "inline" ? InlineTransport.start(options) : await WorkerTransport.start(options);
  return { client: new ProtocolSignerClient(transport), keyFiles: transport.keyFiles };
}
