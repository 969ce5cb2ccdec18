/**
 * The key server under load: the pending cap on every listener, clients that never read, busy
 * clients and the partial-frame deadline, connections that go away, fairness across connections
 * and refusal of what would wait too long. Assertions are on counts and order, never on time.
 */

import { assert, assertEquals } from "../../test/_assert.ts";
import { makeKeys, tlsFiles } from "../../test/_fixtures.ts";
import { openCompartment } from "../guest/files.ts";
import { Op } from "../core/protocol.ts";
import { KeylessClient } from "./client.ts";
import { decodeResponse, encodeMessage, ErrorCode, FrameReader, Opcode, type Response } from "./codec.ts";
import { keylessNames } from "../core/key_names.ts";
import { RemoteKeyService } from "../core/key_service_rpc.ts";
import { KeylessServer, type KeylessServerOptions } from "./server.ts";
import { guestService, keyFinderFor } from "./_test_keys.ts";
import { tempDir } from "../../test/_temp.ts";
import { wasmModule } from "../../test/_wasm.ts";

const root = await tempDir("keycell-overload-");
const [p256] = await makeKeys(root, ["ECC_NIST_P256"]);
const ski = keylessNames(p256.spki)!.ski;
const keys = keyFinderFor([p256]);
const compartment = openCompartment({ wasm: wasmModule(), keysDir: `${root}/keys` });
const sign = (r: Uint8Array) => compartment.handle(r);
const service = guestService(sign);

const signFrame = (id: number, marker = 0) => encodeMessage({ id, opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32).fill(marker), ski });
const pingFrame = (id: number) => encodeMessage({ id, opcode: Opcode.PING });
const concat = (frames: Uint8Array[]) => {
  const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    out.set(f, at);
    at += f.length;
  }
  return out;
};
const code = (r: Response) => r.kind === "error" ? r.code : r.kind;

/** A signer that holds every SIGN until `open()`. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, signer: async (r: Uint8Array) => (r[0] === Op.SIGN && await opened, sign(r)) };
}

const tick = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `ready()` holds; the bound only keeps a broken server from hanging the suite. */
async function until(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1500 && !ready(); i++) await tick();
  assert(ready(), `never happened: ${what}`);
}

/** Waits until a counter stops moving. */
async function settled(count: () => number): Promise<number> {
  let last = -1;
  let still = 0;
  while (still < 5) {
    await tick(50);
    const now = count();
    still = now === last ? still + 1 : 0;
    last = now;
  }
  return last;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

/** Reads responses until `count` have arrived. */
async function readResponses(conn: Deno.Conn, count: number, onResponse?: (r: Response) => void): Promise<Response[]> {
  const reader = new FrameReader();
  const buffer = new Uint8Array(64 * 1024);
  const out: Response[] = [];
  while (out.length < count) {
    const n = await conn.read(buffer);
    if (n === null) break;
    reader.push(buffer.subarray(0, n));
    for (let f = reader.next(); f !== undefined; f = reader.next()) {
      if (f.kind !== "message") throw new Error("the server sent a malformed frame");
      const r = decodeResponse(f.message);
      out.push(r);
      onResponse?.(r);
    }
  }
  return out;
}


/** A server on one listener, and a raw connection to it. */
async function serverOn(
  transport: "unix" | "tcp" | "tls",
  options: Omit<KeylessServerOptions, "keys">,
  dir: string,
): Promise<{ server: KeylessServer; connect(): Promise<Deno.Conn> }> {
  // Requests held at a gate wait as long as the test needs: only the refusal test bounds the wait.
  const server = new KeylessServer({ keys, maxQueueWaitMs: 600_000, ...options });
  if (transport === "unix") {
    const path = `${dir}/ks.sock`;
    await server.listenUnix(path);
    return { server, connect: () => Deno.connect({ transport: "unix", path }) };
  }
  if (transport === "tcp") {
    const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
    return { server, connect: () => Deno.connect({ hostname: "127.0.0.1", port }) };
  }
  const { cert, key, ca } = await tlsFiles(dir);
  const { port } = await server.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  return {
    server,
    connect: async () => {
      const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [ca] });
      await conn.handshake();
      return conn;
    },
  };
}

for (const transport of ["unix", "tcp", "tls"] as const) {
  Deno.test(`keyless over ${transport}: a client that never reads holds at most the pending cap; the server stops reading`, async () => {
    const dir = await tempDir("keycell-cap-");
    const { server, connect } = await serverOn(transport, { service, maxPendingPerConnection: 8 }, dir);
    const conn = await connect();
    const total = 20_000;
    try {
      const ids = Array.from({ length: total }, (_, i) => i + 1);
      // Pings and signatures alike: answers the client does not read are what must stay bounded.
      const writing = writeAll(conn, concat(ids.map((id) => id % 4 === 0 ? signFrame(id) : pingFrame(id)))).catch(() => {});
      const read = await settled(() => server.stats.requests);
      assert(read < total, `the server stopped reading (read ${read} of ${total})`);
      assertEquals(server.stats.maxPending, 8, "pending, counted until written, reached the cap and no more");
      const answers = await readResponses(conn, total);
      await writing;
      assertEquals(answers.length, total, "every request answered once the client reads");
      assertEquals(new Set(answers.map((r) => r.id)).size, total);
      assert(answers.every((r) => r.kind === (r.id % 4 === 0 ? "ok" : "pong")));
      assertEquals(server.stats.maxPending, 8);
    } finally {
      conn.close();
      await server.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("keyless: the partial-frame deadline does not run while the server has stopped reading", async () => {
  const { open, signer } = gate();
  const frameTimeoutMs = 250;
  const server = new KeylessServer({ service: guestService(signer), keys, maxPendingPerConnection: 4, frameTimeoutMs, maxQueueWaitMs: 600_000 });
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const bytes = concat(Array.from({ length: 10 }, (_, i) => signFrame(i + 1, i)));
    const frame = bytes.length / 10;
    // Four whole frames and half of the fifth: the server reads them all, and times the half frame.
    await writeAll(conn, bytes.subarray(0, 4.5 * frame));
    await until(() => server.stats.requests === 4, "four requests read");
    // The rest of the fifth, four more and half of the tenth: the fifth waits for room.
    await writeAll(conn, bytes.subarray(4.5 * frame, 9.5 * frame));
    await until(() => server.stats.requests === 5, "the fifth request read");
    // Longer than the deadline while the server is not reading: a busy client is not cut for that.
    await tick(3 * frameTimeoutMs);
    assertEquals(server.stats.framingLost, 0);
    open();
    await writeAll(conn, bytes.subarray(9.5 * frame));
    const answers = await readResponses(conn, 10);
    assertEquals(answers.map(code), Array(10).fill("ok"), "every request answered on the same connection");
    assertEquals(server.stats.framingLost, 0);
    assertEquals(server.stats.gone, 0);
  } finally {
    conn.close();
    await server.close();
  }
});

Deno.test("keyless: requests of a connection that has gone are dropped before they reach the guest", async () => {
  const { open, signer } = gate();
  const seen: number[] = [];
  const server = new KeylessServer({ service: guestService((r) => (r[0] === Op.SIGN && seen.push(r[r.length - 1]), signer(r))), keys, maxQueueWaitMs: 600_000 });
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const first = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port });
  const gone = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    // The guest is busy with the first client's request.
    const busy = first.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32).fill(1), ski });
    await until(() => seen.length === 1, "the first request in the guest");
    // Ten requests queue behind it; the client reads part of its pong and closes with the rest
    // unread, so its kernel resets the connection.
    await writeAll(gone, concat([pingFrame(100), ...Array.from({ length: 10 }, (_, i) => signFrame(101 + i, 0xbb))]));
    assert((await gone.read(new Uint8Array(100)))! > 0);
    await until(() => server.stats.requests === 12, "every request read");
    gone.close();
    await until(() => server.stats.gone === 1, "the server saw the connection go");
    open();
    assertEquals(code(await busy), "ok");
    assertEquals((await first.request({ opcode: Opcode.PING })).kind, "pong");
    assertEquals(seen.filter((marker) => marker === 0xbb).length, 0, "none of the gone client's requests reached the guest");
    assertEquals(server.stats.dropped, 10, JSON.stringify(server.stats));
  } finally {
    first.close();
    await server.close();
  }
});

Deno.test("keyless: one connection pipelining does not starve another; they take turns", async () => {
  const server = new KeylessServer({ service: guestService(async (r) => (await tick(1), sign(r))), keys, maxQueueWaitMs: 600_000 });
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const busy = await Deno.connect({ hostname: "127.0.0.1", port });
  const other = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port });
  const backlog = 300;
  let busyAnswered = 0;
  try {
    await writeAll(busy, concat(Array.from({ length: backlog }, (_, i) => signFrame(i + 1))));
    const draining = readResponses(busy, backlog, () => busyAnswered++);
    await until(() => server.stats.requests >= backlog, "the backlog read");
    const res = await other.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski }, 600_000);
    const answeredBefore = busyAnswered;
    assertEquals(code(res), "ok");
    assert(answeredBefore < backlog / 2, `the second client was answered after ${answeredBefore} of the ${backlog} pipelined requests`);
    assertEquals((await draining).filter((r) => r.kind === "ok").length, backlog);
  } finally {
    busy.close();
    other.close();
    await server.close();
  }
});

Deno.test("keyless: a client pipelining deeper than its share of the guests is read no further, and none of its requests is refused", async () => {
  // Signatures take 2 ms or more: the share, a quarter of the 2 s wait, is 250 or fewer.
  const server = new KeylessServer({ service: guestService(async (r) => (r[0] === Op.SIGN && await tick(2), sign(r))), keys, maxQueueWaitMs: 2_000, maxPendingPerConnection: 400 });
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    // A few at a time first, so the server knows the pace before the client pipelines.
    for (let id = 1; id <= 10; id++) {
      await writeAll(conn, concat([signFrame(id), signFrame(id + 100)]));
      assertEquals((await readResponses(conn, 2)).map(code), ["ok", "ok"]);
    }
    const count = 500;
    const writing = writeAll(conn, concat(Array.from({ length: count }, (_, i) => signFrame(i + 1000))));
    const answers = await readResponses(conn, count);
    await writing;
    assertEquals(answers.filter((r) => r.kind !== "ok").map(code), [], "every request signed");
    assertEquals(server.stats.refused, 0);
    assert(server.stats.maxPending < 400, `read no further than its share, below the pending cap (at most ${server.stats.maxPending} pending)`);
  } finally {
    conn.close();
    await server.close();
  }
});

Deno.test("keyless: a request that would wait past its deadline is refused at once with INTERNAL", async () => {
  const server = new KeylessServer({ service: guestService(async (r) => (r[0] === Op.SIGN && await tick(20), sign(r))), keys, maxQueueWaitMs: 100 });
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  // Eight clients: each alone is read no further than its share, which never waits that long.
  const conns = await Promise.all(Array.from({ length: 8 }, () => Deno.connect({ hostname: "127.0.0.1", port })));
  try {
    // One request alone, so the server knows how long a signature takes.
    await writeAll(conns[0], signFrame(1));
    assertEquals((await readResponses(conns[0], 1)).map(code), ["ok"]);
    const each = 10;
    const answers: Response[] = [];
    await Promise.all(conns.map((conn, c) => writeAll(conn, concat(Array.from({ length: each }, (_, i) => signFrame(2 + c * each + i))))));
    await Promise.all(conns.map((conn) => readResponses(conn, each, (r) => answers.push(r))));
    const refused = answers.filter((r) => code(r) === ErrorCode.INTERNAL);
    const signed = answers.filter((r) => r.kind === "ok");
    assertEquals(refused.length + signed.length, conns.length * each, JSON.stringify(answers.map(code)));
    assert(signed.length >= 1 && refused.length >= 1, `${signed.length} signed, ${refused.length} refused`);
    assertEquals(answers[0].kind, "error", "a refusal is answered before any queued signature completes");
    const lastSigned = answers.findLastIndex((r) => r.kind === "ok");
    assert(answers.slice(0, lastSigned).some((r) => r.kind === "error"), "refusals do not wait behind the queue");
    assertEquals(server.stats.refused, refused.length);
    assertEquals(server.stats.called, 1 + signed.length, "refused requests never reached the guest");
  } finally {
    for (const conn of conns) conn.close();
    await server.close();
  }
});

Deno.test("keyless: serve's key-service RPC requests are not refused for their wait; Keyless requests beside them are", async () => {
  const { open, signer: gated } = gate();
  let paced = false;
  // The first signature takes 40 ms or more with the only slot busy, so the server's pace says a
  // queued request would wait past its 20 ms bound; every later one is held at the gate.
  const signer = async (r: Uint8Array) => {
    if (r[0] !== Op.SIGN || paced) return await gated(r);
    paced = true;
    await tick(40);
    return sign(r);
  };
  const dir = await tempDir("keycell-rpc-wait-");
  const server = new KeylessServer({ service: guestService(signer), keys, maxQueueWaitMs: 20 });
  await server.listenUnix(`${dir}/ks.sock`);
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const keyless = new KeylessClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  const other = new KeylessClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  const unix = new KeylessClient(await Deno.connect({ transport: "unix", path: `${dir}/ks.sock` }));
  const remote = new RemoteKeyService(async (request) => {
    const answer = await unix.request({ opcode: Opcode.KEYCELL_KEY_SERVICE, payload: request }, 60_000);
    if (answer.kind !== "ok") throw new Error(answer.kind);
    return answer.payload;
  });
  const signRequest = { opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski };
  try {
    assertEquals(code(await keyless.request(signRequest)), "ok", "signed alone, setting the pace");
    const held = keyless.request(signRequest, 60_000);
    await until(() => server.stats.called === 2, "the second signature holds the only slot");
    const rpc = remote.sign({ keyId: p256.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: new Uint8Array(32) });
    await until(() => server.load === 2, "the RPC request is queued");
    assertEquals(code(await other.request(signRequest)), ErrorCode.INTERNAL, "a Keyless request that would wait past the bound is refused at once");
    await tick(100); // several sweeps of the 20 ms bound
    assertEquals([server.stats.refused, server.load], [1, 2], "the RPC request, queued past the bound, still waits");
    open();
    assert((await rpc).length > 0, "the RPC request is signed once the guest is free");
    assertEquals(code(await held), "ok");
  } finally {
    for (const client of [keyless, other, unix]) client.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

for (const transport of ["unix", "tcp", "tls"] as const) {
  Deno.test(`keyless over ${transport}: stopping answers every request read and ends the stream; a client that never reads is cut at the drain deadline`, async () => {
    const dir = await tempDir("keycell-drain-");
    try {
      // A client pipelining signatures the guest holds: the server reads up to the cap and waits.
      const { open, signer } = gate();
      const first = await serverOn(transport, { service: guestService(signer), maxPendingPerConnection: 8 }, dir);
      const busy = await first.connect();
      const total = 200;
      const writing = writeAll(busy, concat(Array.from({ length: total }, (_, i) => signFrame(i + 1)))).catch(() => {});
      const read = await settled(() => first.server.stats.requests);
      const closing = first.server.close(60_000);
      open();
      const answers = await readResponses(busy, total);
      busy.close();
      await writing;
      assertEquals((await closing).cut, 0, "the connection ended within the drain");
      assert(read >= 8 && read < total, `the server had read ${read} of ${total} requests`);
      assertEquals(answers.length, first.server.stats.requests, "every request read is answered, then the stream ends");
      assert(answers.length < total, `the server read nothing more once stopping (${answers.length} of ${total} answered)`);
      assert(answers.every((r) => r.kind === "ok"), JSON.stringify(answers.map(code)));

      // A client that never reads its answers: the server cannot write them, and stops it anyway.
      const second = await serverOn(transport, { service, maxPendingPerConnection: 8 }, dir);
      const deaf = await second.connect();
      const deafWriting = writeAll(deaf, concat(Array.from({ length: 20_000 }, (_, i) => pingFrame(i + 1)))).catch(() => {});
      await settled(() => second.server.stats.requests);
      assertEquals(second.server.stats.maxPending, 8, "its answers are stuck");
      assertEquals((await second.server.close(200)).cut, 1, "closed at the drain deadline");
      deaf.close();
      await deafWriting;
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
