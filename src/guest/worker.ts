/**
 * Worker entry: runs the signer compartment in its own isolate.
 *
 * The first message is a {@linkcode WorkerInit}; the worker answers `{ready: keyFiles}` or
 * `{failed: message}`. After that each message is a batch `[{id, request}, ...]`, answered in
 * order with batches `[{id, response}, ...]`, responses' buffers transferred. A message costs
 * tens of microseconds of CPU whatever it carries, so requests that arrive together travel
 * together; answers go back at least every millisecond, so a long batch does not hold back
 * the answers it has already made.
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

const ANSWER_EVERY_MS = 1;

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
  let answers: { id: number; response: Uint8Array }[] = [];
  let sentAt = performance.now();
  const send = () => {
    self.postMessage(answers, answers.map((a) => a.response.buffer as ArrayBuffer));
    answers = [];
    sentAt = performance.now();
  };
  for (const { id, request } of event.data as { id: number; request: Uint8Array }[]) {
    answers.push({ id, response: compartment.handle(request) });
    if (performance.now() - sentAt >= ANSWER_EVERY_MS) send();
  }
  if (answers.length > 0) send();
};
