import { assert, assertEquals } from "../../test/_assert.ts";
import { type ByteConn, type ConnectionStats, serveConnection } from "./connection.ts";
import { decodeFrame, encodeMessage, Opcode } from "./codec.ts";

const stats = (): ConnectionStats => ({ connections: 0, requests: 0, errors: 0, maxPending: 0, framingLost: 0, gone: 0 });

/** The ids of the frames in `bytes`, in order. */
function idsIn(bytes: Uint8Array): number[] {
  const ids: number[] = [];
  for (let at = 0; at < bytes.length;) {
    const length = 8 + new DataView(bytes.buffer, bytes.byteOffset + at).getUint16(2);
    const frame = decodeFrame(bytes.subarray(at, at + length));
    if (frame?.kind === "message") ids.push(frame.message.id);
    at += length;
  }
  return ids;
}

Deno.test("connection: answers ready together go out in one write, in the order they were ready; one ready later gets its own", async () => {
  const writes: Uint8Array[] = [];
  const releases: (() => void)[] = [];
  const conn: ByteConn = {
    private: false,
    async *chunks() {
      yield new Uint8Array([1, 2, 3, 4].flatMap((id) => [...encodeMessage({ id, opcode: Opcode.PING })]));
    },
    write: (bytes) => {
      // The empty write at the end of the stream asks whether the peer is still there.
      if (bytes.length > 0) writes.push(bytes.slice());
      return Promise.resolve();
    },
    closeWrite: () => Promise.resolve(),
    close: () => {},
  };
  const served = serveConnection(conn, {
    maxPending: 1024,
    frameTimeoutMs: 10_000,
    // Answers 3, 1 and 2 become ready at the same moment; 4 after they are written.
    answer: (message) =>
      new Promise<Uint8Array>((resolve) => releases[message.id] = () => resolve(encodeMessage({ id: message.id, opcode: Opcode.PONG }))),
    stats: stats(),
  });
  while (releases.length < 5) await new Promise((resolve) => setTimeout(resolve, 0));
  releases[3]();
  releases[1]();
  releases[2]();
  while (writes.length < 1) await new Promise((resolve) => setTimeout(resolve, 0));
  releases[4]();
  await served;
  assertEquals(writes.map(idsIn), [[3, 1, 2], [4]]);
});

Deno.test("connection: an ended connection leaves nothing on the server's drain signal, and a drain still ends a read under way", async () => {
  // The key server passes one signal to every connection for its whole life: whatever a connection
  // leaves on it stays, and with it the connection's buffers (once 55 KiB for each one ever served).
  const controller = new AbortController();
  const signal = controller.signal;
  let listening = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = (...args: Parameters<AbortSignal["addEventListener"]>) => (listening++, add(...args));
  signal.removeEventListener = (...args: Parameters<AbortSignal["removeEventListener"]>) => (listening--, remove(...args));
  const pingConn = (): ByteConn => ({
    private: false,
    async *chunks() {
      yield encodeMessage({ id: 1, opcode: Opcode.PING });
    },
    write: () => Promise.resolve(),
    closeWrite: () => Promise.resolve(),
    close: () => {},
  });
  const options = { maxPending: 16, frameTimeoutMs: 10_000, answer: () => Promise.resolve(encodeMessage({ id: 1, opcode: Opcode.PONG })), drain: signal, stats: stats() };
  await Promise.all(Array.from({ length: 100 }, () => serveConnection(pingConn(), options)));
  assertEquals(listening, 0);

  // A client that sends nothing: its connection waits in a read until the server drains.
  let release!: () => void;
  let endedStream = false;
  const idle: ByteConn = {
    ...pingConn(),
    async *chunks() {
      // Nothing arrives; then the client ends its stream.
      await new Promise<void>((resolve) => release = resolve);
      yield* [];
    },
    closeWrite: () => Promise.resolve(void (endedStream = true)),
  };
  const served = serveConnection(idle, options);
  while (listening === 0) await new Promise((resolve) => setTimeout(resolve, 0));
  controller.abort();
  for (let turn = 0; turn < 100 && !endedStream; turn++) await new Promise((resolve) => setTimeout(resolve, 0));
  assert(endedStream, "the drain ended the read under way, and the server ended its stream");
  // It reads on until the client ends its own.
  release();
  await served;
  assertEquals(listening, 0);
});
