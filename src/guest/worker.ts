/**
 * Worker entry: runs the signer compartment in its own isolate.
 *
 * The only message is a {@linkcode WorkerInit}; the worker answers `{ready: keyFiles}` or
 * `{failed: message}`. After that, requests arrive through the `requests` ring and each answer
 * goes back through the `answers` ring under the request's tag, in order, as soon as it is made.
 * The worker then does nothing but sign: it blocks on the ring between requests and never runs
 * its event loop again, so `Worker.terminate()` alone does not stop it; the host closes the
 * rings, and the worker returns and closes itself.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { openGuest } from "./files.ts";
import type { Guest } from "./family_guests.ts";
import { ByteRing } from "./ring.ts";
import type { StartOptions } from "./inline.ts";

/** The message that starts a signer worker: what a compartment needs, and its two rings. */
export interface WorkerInit extends StartOptions {
  /** {@linkcode ByteRing} buffers: the host writes `requests` and reads `answers`. */
  requests: SharedArrayBuffer;
  answers: SharedArrayBuffer;
}

self.onmessage = (event: MessageEvent) => {
  const init = event.data as WorkerInit;
  let guest: Guest;
  try {
    guest = openGuest(init);
  } catch (err) {
    self.postMessage({ failed: (err as Error).message });
    return;
  }
  self.postMessage({ ready: guest.keyFiles });
  serve(guest, new ByteRing(init.requests), new ByteRing(init.answers));
  self.close();
};

function serve(guest: Guest, requests: ByteRing, answers: ByteRing): void {
  while (requests.waitForMessage()) {
    let request;
    while ((request = requests.read()) !== undefined) {
      const response = guest.handle(request.bytes);
      while (!answers.write(request.tag, response)) {
        if (!answers.waitForRoom(response.length)) return;
      }
    }
  }
}
