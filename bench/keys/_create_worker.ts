/**
 * Makes sealed keys for bench/keys on one core: each message `{from, to}` is answered with the
 * sealed records of keys `from..to-1` (generated in this worker's guest, then dropped from it: the
 * store keeps them). The first message is `{wasm, masterKeyPath}`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { Compartment } from "../../src/guest/compartment.ts";
import { openCompartment } from "../../src/guest/files.ts";
import { decodeKeyRecord, decodeResponse, encodeRequest, KEY_SPEC_CODES, keyIdBytes, Op, Status } from "../../src/core/protocol.ts";
import { specAt } from "./_mix.ts";

let guest: Compartment | undefined;

self.onmessage = (event: MessageEvent) => {
  if (guest === undefined) {
    guest = openCompartment({ wasm: event.data.wasm, masterKeyPath: event.data.masterKeyPath, cacheBytes: 1024 * 1024 });
    self.postMessage({ ready: true });
    return;
  }
  const { from, to } = event.data as { from: number; to: number };
  const records = [];
  for (let i = from; i < to; i++) {
    const keySpec = specAt(i);
    const made = decodeResponse(guest.handle(encodeRequest(Op.GENERATE, new Uint8Array([KEY_SPEC_CODES[keySpec]]))));
    if (made.status !== Status.OK) throw new Error(`generate ${keySpec}: status ${made.status}`);
    const r = decodeKeyRecord(made.body)!;
    records.push({ id: r.id, keySpec, publicKey: r.spki, sealed: r.sealed! });
    guest.handle(encodeRequest(Op.DROP, keyIdBytes(r.id)!));
  }
  self.postMessage({ from, records });
};
