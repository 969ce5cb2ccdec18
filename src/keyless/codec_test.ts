import { assert, assertEquals } from "../../test/_assert.ts";
import {
  decodeFrame,
  decodeItems,
  decodeResponse,
  encodeItems,
  encodeMessage,
  ErrorCode,
  errorResponse,
  findItem,
  FrameReader,
  Opcode,
  PAD_TO,
  Tag,
} from "./codec.ts";

function header(length: number, id: number, major = 1, minor = 0): Uint8Array {
  const h = new Uint8Array(8);
  const v = new DataView(h.buffer);
  h[0] = major;
  h[1] = minor;
  v.setUint16(2, length);
  v.setUint32(4, id);
  return h;
}

Deno.test("codec: every opcode round-trips with every item, padded to 1024 bytes", () => {
  const ski = crypto.getRandomValues(new Uint8Array(20));
  const digest = crypto.getRandomValues(new Uint8Array(32));
  for (const [name, opcode] of Object.entries(Opcode)) {
    const payload = crypto.getRandomValues(new Uint8Array(opcode % 7 === 0 ? 0 : 48));
    const bytes = encodeMessage({
      id: 0xfedcba98,
      opcode,
      payload,
      ski,
      certificateDigest: digest,
      sni: new TextEncoder().encode("example.com"),
      clientIp: Uint8Array.of(127, 0, 0, 1),
      serverIp: Uint8Array.of(127, 0, 0, 2),
    });
    assertEquals(bytes.length, PAD_TO, name);
    assertEquals([bytes[0], bytes[1]], [1, 0], `${name}: version 1.0`);
    assertEquals(new DataView(bytes.buffer).getUint16(2), PAD_TO - 8, `${name}: body length`);
    const frame = decodeFrame(bytes);
    assert(frame?.kind === "message", name);
    const { id, items } = frame.message;
    assertEquals(id, 0xfedcba98);
    assertEquals(findItem(items, Tag.OPCODE), Uint8Array.of(opcode), name);
    assertEquals(findItem(items, Tag.PAYLOAD), payload, name);
    assertEquals(findItem(items, Tag.SKI), ski);
    assertEquals(findItem(items, Tag.CERTIFICATE_DIGEST), digest);
    assertEquals(new TextDecoder().decode(findItem(items, Tag.SNI)), "example.com");
    assertEquals(findItem(items, Tag.CLIENT_IP), Uint8Array.of(127, 0, 0, 1));
    assertEquals(findItem(items, Tag.SERVER_IP), Uint8Array.of(127, 0, 0, 2));
    assert(items.every((i) => i.tag !== Tag.PADDING), "padding is dropped");
  }
});

Deno.test("codec: responses decode as ok, pong and error", () => {
  const sig = Uint8Array.of(1, 2, 3);
  const ok = decodeFrame(encodeMessage({ id: 5, opcode: Opcode.RESPONSE, payload: sig }));
  assert(ok?.kind === "message");
  assertEquals(decodeResponse(ok.message), { id: 5, kind: "ok", payload: sig });
  const pong = decodeFrame(encodeMessage({ id: 6, opcode: Opcode.PONG, payload: sig }));
  assert(pong?.kind === "message");
  assertEquals(decodeResponse(pong.message), { id: 6, kind: "pong", payload: sig });
  const err = decodeFrame(errorResponse(7, ErrorCode.KEY_NOT_FOUND));
  assert(err?.kind === "message");
  assertEquals(decodeResponse(err.message), { id: 7, kind: "error", code: 2 });
});

Deno.test("codec: large messages are not padded; bodies near 1024 still frame", () => {
  for (const size of [0, 1, 1000, 1002, 1003, 1004, 1005, 1013, 4000, 65535 - 3 - 4]) {
    const bytes = encodeMessage({ id: 1, opcode: Opcode.PING, payload: new Uint8Array(size) });
    assert(bytes.length >= PAD_TO, `${size}`);
    const unpadded = 8 + 4 + 3 + size;
    assertEquals(bytes.length, unpadded >= PAD_TO ? unpadded : Math.max(PAD_TO, unpadded + 3), `${size}`);
    const frame = decodeFrame(bytes);
    assert(frame?.kind === "message", `${size}`);
    assertEquals(findItem(frame.message.items, Tag.PAYLOAD)?.length, size);
  }
  let threw = false;
  try {
    encodeMessage({ id: 1, opcode: Opcode.PING, payload: new Uint8Array(65535) });
  } catch (err) {
    threw = err instanceof RangeError;
  }
  assert(threw, "a body past 65535 bytes cannot be encoded");
});

Deno.test("codec: unknown tags are ignored; zero-length items are items", () => {
  const bytes = encodeItems(3, [
    { tag: 0x7e, data: Uint8Array.of(9, 9) },
    { tag: Tag.OPCODE, data: Uint8Array.of(Opcode.PING) },
    { tag: 0x99, data: new Uint8Array() },
    { tag: Tag.PAYLOAD, data: new Uint8Array() },
    { tag: Tag.PADDING, data: new Uint8Array() },
  ], false);
  const frame = decodeFrame(bytes);
  assert(frame?.kind === "message");
  assertEquals(findItem(frame.message.items, Tag.OPCODE), Uint8Array.of(Opcode.PING));
  assertEquals(findItem(frame.message.items, Tag.PAYLOAD), new Uint8Array());
  assertEquals(frame.message.items.length, 4, "padding dropped, unknown tags kept for whoever knows them");
});

Deno.test("codec: malformed frames", async (t) => {
  await t.step("short header: nothing yet", () => {
    const r = new FrameReader();
    r.push(header(0, 1).subarray(0, 7));
    assertEquals(r.next(), undefined);
    assertEquals(r.buffered, 7);
  });
  await t.step("wrong major version: framing lost, with the id", () => {
    const r = new FrameReader();
    r.push(header(4, 77, 2));
    assertEquals(r.next(), { kind: "bad-version", id: 77 });
    assertEquals(r.buffered, 0);
  });
  await t.step("another minor version is read", () => {
    const body = encodeItems(1, [{ tag: Tag.OPCODE, data: Uint8Array.of(Opcode.PING) }], false).subarray(8);
    const frame = decodeFrame(new Uint8Array([...header(body.length, 1, 1, 3), ...body]));
    assertEquals(frame?.kind, "message");
  });
  await t.step("length longer than the body: waits for the rest", () => {
    const r = new FrameReader();
    r.push(new Uint8Array([...header(10, 1), 0x11, 0, 1, 0xf1]));
    assertEquals(r.next(), undefined);
  });
  await t.step("length shorter than the body: the cut body is malformed, the rest is the next header", () => {
    const full = encodeItems(9, [{ tag: Tag.OPCODE, data: Uint8Array.of(Opcode.PING) }], false);
    const bytes = full.slice();
    new DataView(bytes.buffer).setUint16(2, 2);
    const r = new FrameReader();
    r.push(bytes);
    assertEquals(r.next(), { kind: "malformed", id: 9 });
    assertEquals(r.buffered, 2);
  });
  await t.step("item length past the end of the body: malformed, framing intact", () => {
    const r = new FrameReader();
    const ping = encodeMessage({ id: 2, opcode: Opcode.PING });
    r.push(new Uint8Array([...header(4, 1), 0x11, 0, 9, 0xf1, ...ping]));
    assertEquals(r.next(), { kind: "malformed", id: 1 });
    assertEquals(r.next()?.kind, "message", "the next frame is read normally");
    assertEquals(decodeItems(Uint8Array.of(0x11, 0)), undefined, "a partial item header is malformed too");
  });
  await t.step("empty body: no items", () => {
    const frame = decodeFrame(header(0, 4));
    assertEquals(frame, { kind: "message", message: { id: 4, items: [] } });
  });
});

Deno.test("codec: frames split at every byte boundary reassemble", () => {
  const a = encodeMessage({ id: 1, opcode: Opcode.PING, payload: Uint8Array.of(1) });
  const b = encodeMessage({ id: 2, opcode: Opcode.RSA_SIGN_SHA256, payload: new Uint8Array(32), ski: new Uint8Array(20) }, false);
  const stream = new Uint8Array([...a, ...b]);
  for (const cut of [1, 3, 7, 8, 9, 100, 1023, 1024, 1025, stream.length - 1]) {
    const r = new FrameReader();
    const ids: number[] = [];
    r.push(stream.subarray(0, cut));
    for (let f = r.next(); f; f = r.next()) ids.push((f as { message: { id: number } }).message.id);
    r.push(stream.subarray(cut));
    for (let f = r.next(); f; f = r.next()) ids.push((f as { message: { id: number } }).message.id);
    assertEquals(ids, [1, 2], `cut at ${cut}`);
  }
  const r = new FrameReader();
  const ids: number[] = [];
  for (const byte of stream) {
    r.push(Uint8Array.of(byte));
    for (let f = r.next(); f; f = r.next()) ids.push((f as { message: { id: number } }).message.id);
  }
  assertEquals(ids, [1, 2], "byte by byte");
});
