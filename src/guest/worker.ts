/**
 * Worker entry: runs the signer compartment in its own isolate.
 *
 * The first message is `{wasm, keysDir}`; the worker answers `{ready: keyFiles}` or
 * `{failed: message}`. After that each message is `{id, request}` and is answered
 * `{id, response}`, with the response's buffer transferred.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { Compartment } from "./compartment.ts";

/** The first message a signer worker expects. */
export interface WorkerInit {
  wasm: Uint8Array;
  keysDir?: string;
  masterKeyPath?: string;
  createMasterKey?: boolean;
  cacheBytes?: number;
}

let compartment: Compartment | undefined;

self.onmessage = (event: MessageEvent) => {
  if (compartment === undefined) {
    const init = event.data as WorkerInit;
    try {
      compartment = Compartment.create(init);
      self.postMessage({ ready: compartment.keyFiles });
    } catch (err) {
      self.postMessage({ failed: (err as Error).message });
    }
    return;
  }
  const { id, request } = event.data as { id: number; request: Uint8Array };
  const response = compartment.handle(request).slice();
  self.postMessage({ id, response }, [response.buffer]);
};
