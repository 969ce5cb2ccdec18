import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { KeylessClient, KeylessClientError } from "./client.ts";
import { encodeMessage, findItem, FrameReader, Opcode, Tag } from "./codec.ts";

/** A server that pongs every ping whose payload is not 0 and leaves the others unanswered. */
function pongServer(): { port: number; stop(): Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const served = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (async () => {
        const reader = new FrameReader();
        const buffer = new Uint8Array(4096);
        try {
          for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
            reader.push(buffer.subarray(0, n));
            for (let frame = reader.next(); frame !== undefined; frame = reader.next()) {
              if (frame.kind !== "message") continue;
              const payload = findItem(frame.message.items, Tag.PAYLOAD);
              if (payload?.[0] === 0) continue;
              await conn.write(encodeMessage({ id: frame.message.id, opcode: Opcode.PONG, payload }));
            }
          }
        } catch {
          // closed by the test
        }
      })();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async stop() {
      listener.close();
      for (const conn of conns) conn.close();
      await served.catch(() => {});
    },
  };
}

const ping = (answered: boolean) => ({ opcode: Opcode.PING, payload: new Uint8Array([answered ? 1 : 0]) });

Deno.test("client: an unanswered request times out at its own deadline while requests before and after it are answered", async () => {
  const server = pongServer();
  const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: server.port });
  try {
    // A long deadline first, then a shorter one: the shorter one must not wait for the longer.
    const long = client.request(ping(false), 5_000).then(() => "answered", (err) => (err as KeylessClientError).reason);
    const started = performance.now();
    const short = assertRejects(() => client.request(ping(false), 200), KeylessClientError, "within 200 ms");
    for (let i = 0; i < 20; i++) assertEquals((await client.request(ping(true), 1_000)).kind, "pong");
    await short;
    const waited = performance.now() - started;
    assert(waited >= 190 && waited < 2_000, `timed out after ${waited.toFixed(0)} ms`);
    // Answered requests set no deadline of their own that could fail them later.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    assertEquals((await client.request(ping(true), 1_000)).kind, "pong");
    client.close();
    assertEquals(await long, "closed", "closing fails the request still waiting, before its deadline");
  } finally {
    client.close();
    await server.stop();
  }
});
