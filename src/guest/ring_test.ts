import { assert, assertEquals, assertThrows } from "../../test/_assert.ts";
import { ByteRing } from "./ring.ts";

const bytes = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);

Deno.test("ring: messages come out in order, whole, with their tags, also across the end of the buffer", () => {
  const buffer = ByteRing.allocate(256);
  const writer = new ByteRing(buffer);
  const reader = new ByteRing(buffer);
  // Lengths that are not multiples of 8 move each record's start around the buffer, so some
  // payloads are split between its end and its start.
  for (let round = 0; round < 200; round++) {
    const lengths = [round % 37, 1, (round * 7) % 53];
    lengths.forEach((n, i) => assert(writer.write(round * 3 + i, bytes(n, round + i))));
    for (const [i, n] of lengths.entries()) {
      const message = reader.read();
      assertEquals(message?.tag, round * 3 + i);
      assertEquals(message?.bytes, bytes(n, round + i));
    }
    assertEquals(reader.read(), undefined);
  }
});

Deno.test("ring: a full ring refuses a write and takes it once the reader has made room", () => {
  const buffer = ByteRing.allocate(64);
  const writer = new ByteRing(buffer);
  const reader = new ByteRing(buffer);
  assert(writer.write(1, bytes(24, 1))); // 32 bytes with its header
  assert(writer.write(2, bytes(24, 2)));
  assertEquals(writer.write(3, bytes(1, 3)), false, "no room: nothing written");
  assertEquals(reader.read()?.tag, 1);
  assert(writer.write(3, bytes(1, 3)));
  assertEquals([reader.read()?.tag, reader.read()?.tag, reader.read()], [2, 3, undefined]);
  assertThrows(() => writer.write(4, bytes(57, 4)), RangeError, "at most 56 bytes");
  assertThrows(() => ByteRing.allocate(100), RangeError);
});

Deno.test("ring: message() resolves when another thread writes, and wake() releases it without a message", async () => {
  const buffer = ByteRing.allocate(1024);
  const reader = new ByteRing(buffer);
  const worker = new Worker(
    `data:text/javascript,self.onmessage = (e) => { const c = new Int32Array(e.data, 0, 2); const d = new DataView(e.data, 8);
      d.setUint32(0, 3, true); d.setUint32(4, 42, true); new Uint8Array(e.data, 16, 3).set([7, 8, 9]);
      Atomics.store(c, 0, 16); Atomics.notify(c, 0); };`,
    { type: "module" },
  );
  try {
    const arrived = reader.message();
    worker.postMessage(buffer);
    await arrived;
    assertEquals(reader.read(), { tag: 42, bytes: new Uint8Array([7, 8, 9]) });
    const woken = reader.message();
    reader.wake();
    await woken;
    assertEquals(reader.read(), undefined);
  } finally {
    worker.terminate();
  }
});
