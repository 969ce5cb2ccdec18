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
import { WorkerTransport } from "./worker_transport.ts";
import { WasmtimeTransport } from "./wasmtime_transport.ts";
import type { Engine } from "./config.ts";

export type { KeyInfo, SignerClient, SignRequest } from "../core/signer_client.ts";

/** The signer modes `KEYCELL_SIGNER` may name. */
export type SignerMode = "worker" | "inline" | "process";

/**
 * Starts a signer in this process's reach (inline, or in Workers) and reports what loading the
 * key directory did. In `worker` mode, `instances` workers (default: one per core) each run a
 * guest; one is a single worker. `process` mode is a key server's whole sealed-key service, not a
 * transport to one guest: `ProcessKeyService` in process_transport.ts. With `inlineWhen`, the
 * workers are joined by a guest in this isolate for requests that come alone (see pool.ts). With
 * `engine: "wasmtime"`, each guest is a wasmtime child process instead of a Worker, and none runs
 * in this isolate (`inlineWhen` is ignored), so no key byte enters this process.
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
  mode: Exclude<SignerMode, "process">,
  options: StartOptions,
  { instances = navigator.hardwareConcurrency, inlineWhen, engine = "v8" }: { instances?: number; inlineWhen?: (workersIdle: boolean) => boolean; engine?: Engine } = {},
): Promise<{ client: ProtocolSignerClient; keyFiles: readonly KeyFileReport[] }> {
  if (engine === "wasmtime") {
    if (mode === "inline") throw new Error("the wasmtime engine runs guests in child processes, not inline");
    const transport = instances === 1
      ? await WasmtimeTransport.start(options)
      : await PoolTransport.start(options, { instances, startMember: (o) => WasmtimeTransport.start(o) });
    return { client: new ProtocolSignerClient(transport), keyFiles: transport.keyFiles };
  }
  const transport = mode === "inline"
    ? InlineTransport.start(options)
    : instances === 1 && inlineWhen === undefined
    ? await WorkerTransport.start(options)
    : await PoolTransport.start(options, { instances, inlineWhen });
  return { client: new ProtocolSignerClient(transport), keyFiles: transport.keyFiles };
}
