/**
 * A Worker that calls its own guest directly in a loop: the "guest called directly" figure for
 * one core, run once per core at the same time to find what the cores can do with no boundary.
 *
 * First message `{wasm, keysDir}`, answered `{ready: true}`; then each `{request, seconds}` is
 * answered `{ops, elapsedMs}`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { Compartment } from "../src/guest/compartment.ts";
import { openCompartment } from "../src/guest/files.ts";

let compartment: Compartment | undefined;

self.onmessage = (event: MessageEvent) => {
  if (compartment === undefined) {
    compartment = openCompartment(event.data);
    self.postMessage({ ready: true });
    return;
  }
  const { request, seconds } = event.data as { request: Uint8Array; seconds: number };
  const start = performance.now();
  let ops = 0;
  let elapsedMs = 0;
  while (elapsedMs < seconds * 1000) {
    compartment.handle(request);
    ops++;
    elapsedMs = performance.now() - start;
  }
  self.postMessage({ ops, elapsedMs });
};
