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

Deno.test("ring: message() resolves when another thread writes; close() lets a blocked worker return", async () => {
  const requests = ByteRing.allocate(1024);
  const answers = ByteRing.allocate(1024);
  const reader = new ByteRing(answers);
  // The worker echoes each request until its ring closes, then says so and ends.
  const worker = new Worker(
    `data:text/javascript,import { ByteRing } from "${new URL("./ring.ts", import.meta.url)}";
      self.onmessage = (e) => {
        const [requests, answers] = [new ByteRing(e.data[0]), new ByteRing(e.data[1])];
        while (requests.waitForMessage()) { const m = requests.read(); answers.write(m.tag, m.bytes); }
        self.postMessage("returned");
        self.close();
      };`,
    { type: "module" },
  );
  const returned = new Promise((resolve) => worker.onmessage = (e) => resolve(e.data));
  try {
    worker.postMessage([requests, answers]);
    const arrived = reader.message();
    new ByteRing(requests).write(42, new Uint8Array([7, 8, 9]));
    await arrived;
    assertEquals(reader.read(), { tag: 42, bytes: new Uint8Array([7, 8, 9]) });
    new ByteRing(requests).close();
    assertEquals(await returned, "returned");
    const closed = new ByteRing(answers);
    closed.close();
    await closed.message(); // resolves at once on a closed ring
    assertEquals(closed.waitForMessage(), false);
  } finally {
    worker.terminate();
  }
});
