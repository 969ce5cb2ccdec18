/**
 * Starts the signer client a configuration asks for.
 *
 * @module
 */

import { ProtocolSignerClient } from "../core/signer_client.ts";
import type { KeyFileReport } from "../core/protocol.ts";
import { InlineTransport } from "../guest/inline.ts";
import type { StartOptions } from "../guest/inline.ts";
import { PoolTransport } from "./pool.ts";
import { type ProcessOptions, ProcessTransport } from "./process_transport.ts";
import { WorkerTransport } from "./worker_transport.ts";

export type { KeyInfo, SignerClient, SignRequest } from "../core/signer_client.ts";

/** The signer modes `KEYCELL_SIGNER` may name. */
export type SignerMode = "worker" | "inline" | "process";

/**
 * Starts a signer in the given mode and reports what loading the key directory did. In `worker`
 * mode, `instances` workers (default: one per core) each run a guest; one is a single worker.
 *
 * @example
 * ```ts
 * import { startSigner } from "./signer.ts";
 *
 * const wasm = Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url));
 * const { client, keyFiles } = await startSigner("inline", { wasm });
 * await client.health();
 * keyFiles.length; // 0: no key directory
 * await client.close();
 * ```
 */
export async function startSigner(
  mode: SignerMode,
  options: StartOptions,
  { instances = navigator.hardwareConcurrency, process }: { instances?: number; process?: ProcessOptions } = {},
): Promise<{ client: ProtocolSignerClient; keyFiles: readonly KeyFileReport[]; keyServerGuest?: string }> {
  // `process`: a key server process holds the guest; this process never reads the key files.
  // Without a socket path, a private key server is started for this client alone.
  const transport = mode === "process"
    ? await ProcessTransport.start({ keysDir: options.keysDir, ...process })
    : mode === "inline"
    ? InlineTransport.start(options)
    : instances === 1
    ? await WorkerTransport.start(options)
    : await PoolTransport.start(options, { instances });
  const keyServerGuest = transport instanceof ProcessTransport ? transport.keyServerGuest : undefined;
  return { client: new ProtocolSignerClient(transport), keyFiles: transport.keyFiles, keyServerGuest };
}
