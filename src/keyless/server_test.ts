import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { KeycellError } from "../core/errors.ts";
import { ecdsaDerToRaw, type FixtureKey, makeKeys, openssl } from "../../test/_fixtures.ts";
import { signEveryOpcode, webCryptoAgrees } from "../../test/_keyless_sign.ts";
import { openCompartment } from "../guest/files.ts";
import { Op, Status } from "../core/protocol.ts";
import { Method, RemoteKeyService } from "../core/key_service_rpc.ts";
import { KeylessClient } from "./client.ts";
import { encodeItems, encodeMessage, ErrorCode, Opcode, type Response, Tag } from "./codec.ts";
import { fuzzKeyless } from "./fuzz.ts";
import { keylessNames } from "../core/key_names.ts";
import { type KeylessAuditRecord, KeylessServer, type KeylessServerOptions } from "./server.ts";
import { guestService, keyFinderFor } from "./_test_keys.ts";
import { AuditLog } from "../deno/audit_log.ts";
import { tempDir } from "../../test/_temp.ts";

/** A guest's message function, as these tests wrap it to count, slow or break its calls. */
type GuestFunction = (request: Uint8Array) => Uint8Array | Promise<Uint8Array>;

const WASM = Deno.readFileSync(new URL("../../wasm/signer.wasm", import.meta.url));
const root = await tempDir("keycell-keyless-");
const keys = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"]);
const rsa = keys.find((k) => k.keySpec === "RSA_2048")!;
const p256 = keys.find((k) => k.keySpec === "ECC_NIST_P256")!;
const p384 = keys.find((k) => k.keySpec === "ECC_NIST_P384")!;
const names = new Map(keys.map((k) => [k.id, keylessNames(k.spki)!] as const));
const skiOf = (k: FixtureKey) => names.get(k.id)!.ski;
const fixtureKeys = keyFinderFor(keys);

interface Running {
  server: KeylessServer;
  socket: string;
  tcp: { transport: "tcp"; hostname: string; port: number };
  unix: { transport: "unix"; path: string };
  close(): Promise<void>;
}

async function start(
  guest?: GuestFunction,
  options: Omit<Partial<KeylessServerOptions>, "service"> = {},
): Promise<Running> {
  const compartment = openCompartment({ wasm: WASM, keysDir: `${root}/keys` });
  const dir = await tempDir("keycell-ks-");
  const socket = `${dir}/keyserver.sock`;
  const service = guestService(guest ?? ((r) => compartment.handle(r)));
  // These tests check answers, not refusals: no request is refused for the wait on a loaded machine.
  const server = new KeylessServer({ service, keys: fixtureKeys, keyFiles: () => compartment.keyFiles, maxQueueWaitMs: 600_000, ...options });
  await server.listenUnix(socket);
  const addr = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  return {
    server,
    socket,
    tcp: { transport: "tcp", hostname: "127.0.0.1", port: addr.port },
    unix: { transport: "unix", path: socket },
    close: async () => void await server.close(),
  };
}

Deno.test("keyless: every sign opcode, by SKI and by certificate digest, verified by openssl and WebCrypto", async () => {
  const s = await start();
  const client = await KeylessClient.connect(s.tcp);
  try {
    await signEveryOpcode(client, { rsa, p256, p384 });
  } finally {
    client.close();
    await s.close();
  }
});

Deno.test("keyless: ping echoes its payload; unsupported and unexpected opcodes; private opcodes only on the Unix socket", async () => {
  const s = await start();
  const tcp = await KeylessClient.connect(s.tcp);
  const unix = await KeylessClient.connect(s.unix);
  try {
    for (const payload of [new Uint8Array(), Uint8Array.of(1, 2, 3), new Uint8Array(2000).fill(7)]) {
      assertEquals(await tcp.request({ opcode: Opcode.PING, payload }), { id: 1 + [0, 3, 2000].indexOf(payload.length), kind: "pong", payload });
    }
    const expectError = async (client: KeylessClient, fields: Parameters<KeylessClient["request"]>[0], code: number, what: string) => {
      const res = await client.request(fields);
      assertEquals(res.kind === "error" ? res.code : res, code, what);
    };
    const ski = skiOf(rsa);
    for (const op of [Opcode.RSA_DECRYPT, Opcode.ED25519_SIGN, Opcode.SEAL, Opcode.UNSEAL, Opcode.RPC, Opcode.CUSTOM, 0x08, 0x77, 0x00]) {
      await expectError(tcp, { opcode: op, payload: new Uint8Array(32), ski }, ErrorCode.BAD_OPCODE, `opcode 0x${op.toString(16)}`);
    }
    for (const op of [Opcode.RESPONSE, Opcode.PONG, Opcode.ERROR]) {
      await expectError(tcp, { opcode: op, payload: Uint8Array.of(0) }, ErrorCode.UNEXPECTED_OPCODE, `opcode 0x${op.toString(16)}`);
    }
    const health = Uint8Array.of(Method.HEALTH);
    await expectError(tcp, { opcode: Opcode.KEYCELL_KEY_SERVICE, payload: health }, ErrorCode.BAD_OPCODE, "key service over TCP");
    await expectError(tcp, { opcode: Opcode.KEYCELL_KEY_FILES }, ErrorCode.BAD_OPCODE, "key files over TCP");
    await expectError(unix, { opcode: Opcode.KEYCELL_KEY_SERVICE }, ErrorCode.FORMAT, "a key service request with no payload");
    const res = await unix.request({ opcode: Opcode.KEYCELL_KEY_SERVICE, payload: health });
    assert(res.kind === "ok");
    assertEquals([...res.payload], [0], "the key service answered OK with no body");
    // The same RPC the `process` mode's host speaks, over this socket.
    const remote = new RemoteKeyService(async (request) => {
      const answer = await unix.request({ opcode: Opcode.KEYCELL_KEY_SERVICE, payload: request });
      if (answer.kind !== "ok") throw new Error(answer.kind);
      return answer.payload;
    });
    assertEquals((await remote.listKeys()).map((k) => k.id).sort(), keys.map((k) => k.id).sort());
    await assertRejects(() => remote.getKey("ab".repeat(32)), KeycellError, "no key with that id");
    const files = await unix.request({ opcode: Opcode.KEYCELL_KEY_FILES });
    assert(files.kind === "ok");
    assertEquals(JSON.parse(new TextDecoder().decode(files.payload)).filter((f: { id?: string }) => f.id).length, keys.length);
    assertEquals((await Deno.stat(s.socket)).mode! & 0o777, 0o600, "the socket is the owner's only");
  } finally {
    tcp.close();
    unix.close();
    await s.close();
  }
});

Deno.test("keyless: bad requests each get their own error and the connection stays open", async () => {
  const s = await start();
  const client = await KeylessClient.connect(s.tcp);
  const enc = new TextEncoder();
  const d32 = new Uint8Array(32);
  const cases: [string, Parameters<KeylessClient["request"]>[0], number][] = [
    ["unknown SKI", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, ski: new Uint8Array(20) }, ErrorCode.KEY_NOT_FOUND],
    ["unknown digest", { opcode: Opcode.RSA_SIGN_SHA256, payload: d32, certificateDigest: new Uint8Array(32) }, ErrorCode.KEY_NOT_FOUND],
    ["SKI of the wrong length", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, ski: new Uint8Array(21) }, ErrorCode.FORMAT],
    ["zero-length SKI", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, ski: new Uint8Array() }, ErrorCode.FORMAT],
    ["digest of the wrong length", { opcode: Opcode.RSA_SIGN_SHA256, payload: d32, certificateDigest: new Uint8Array(31) }, ErrorCode.FORMAT],
    ["no key named", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32 }, ErrorCode.KEY_NOT_FOUND],
    ["a plain SNI names no key", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, sni: enc.encode("www.example.com") }, ErrorCode.KEY_NOT_FOUND],
    ["SNI that is a URL path", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, sni: enc.encode("/../../etc/passwd?x=1") }, ErrorCode.FORMAT],
    ["SNI longer than any storage key", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, sni: enc.encode("a.".repeat(2000)) }, ErrorCode.FORMAT],
    ["zero-length payload", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(), ski: skiOf(p256) }, ErrorCode.FORMAT],
    ["no payload", { opcode: Opcode.ECDSA_SIGN_SHA256, ski: skiOf(p256) }, ErrorCode.FORMAT],
    ["digest too short", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(31), ski: skiOf(p256) }, ErrorCode.FORMAT],
    ["digest for another hash", { opcode: Opcode.RSA_SIGN_SHA384, payload: d32, ski: skiOf(rsa) }, ErrorCode.FORMAT],
    ["RSA opcode on an EC key", { opcode: Opcode.RSA_SIGN_SHA256, payload: d32, ski: skiOf(p256) }, ErrorCode.CRYPTO_FAILED],
    ["ECDSA opcode on an RSA key", { opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, ski: skiOf(rsa) }, ErrorCode.CRYPTO_FAILED],
  ];
  try {
    for (const [what, fields, code] of cases) {
      const res = await client.request(fields);
      assertEquals(res.kind === "error" ? res.code : res, code, what);
    }
    // An SKI with an odd SNI beside it still signs: the SNI is not a key name.
    const ok = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: d32, ski: skiOf(p256), sni: enc.encode("/a/path") });
    assertEquals(ok.kind, "ok");
    // Items the protocol does not know, and zero-length ones, are ignored.
    const raw = encodeItems(900, [
      { tag: 0x7e, data: new Uint8Array() },
      { tag: Tag.OPCODE, data: Uint8Array.of(Opcode.PING) },
      { tag: 0x99, data: Uint8Array.of(1, 2) },
      { tag: Tag.PADDING, data: new Uint8Array() },
    ]);
    const pong = client.expect(900);
    await client.write(raw);
    assertEquals((await pong).kind, "pong");
    for (const [id, items] of [[901, []], [902, [{ tag: Tag.OPCODE, data: new Uint8Array() }]], [903, [{ tag: Tag.OPCODE, data: Uint8Array.of(1, 2) }]]] as const) {
      const answer = client.expect(id);
      await client.write(encodeItems(id, [...items]));
      const res = await answer;
      assertEquals(res.kind === "error" ? res.code : res, ErrorCode.FORMAT, `frame ${id}`);
    }
    assertEquals((await client.request({ opcode: Opcode.PING })).kind, "pong", "the connection is still open");
  } finally {
    client.close();
    await s.close();
  }
});

/** Sends raw bytes on a fresh connection, ends the stream, and collects every response until the server closes. */
async function exchange(s: Running, bytes: Uint8Array, ids: number[]): Promise<{ answers: (Response | "none")[]; closed: boolean }> {
  const client = await KeylessClient.connect(s.tcp);
  const answers = ids.map((id) => client.expect(id, 3_000).catch(() => "none" as const));
  await client.write(bytes);
  await client.closeWrite();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const closed = await Promise.race([
    client.closed.then(() => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5_000))),
  ]);
  clearTimeout(timer);
  const result = { answers: await Promise.all(answers), closed };
  client.close();
  return result;
}

function header(length: number, id: number, major = 1): Uint8Array {
  const h = Uint8Array.of(major, 0, 0, 0, 0, 0, 0, 0);
  new DataView(h.buffer).setUint16(2, length);
  new DataView(h.buffer).setUint32(4, id);
  return h;
}

Deno.test("keyless: malformed frames answer the right error, or close only that connection", async () => {
  const s = await start();
  const bystander = await KeylessClient.connect(s.unix);
  const ping = (id: number) => encodeMessage({ id, opcode: Opcode.PING, payload: Uint8Array.of(9) });
  const code = (r: Response | "none") => r === "none" ? "none" : r.kind === "error" ? r.code : r.kind;
  try {
    let r = await exchange(s, header(0, 1).subarray(0, 5), []);
    assert(r.closed, "short header, then end of stream: closed");

    r = await exchange(s, new Uint8Array([...header(4, 2, 2), 0x11, 0, 1, 0xf1, ...ping(3)]), [2, 3]);
    assertEquals(r.answers.map(code), [ErrorCode.VERSION_MISMATCH, "none"], "wrong version: its id gets VERSION_MISMATCH, framing is lost");
    assert(r.closed);

    r = await exchange(s, new Uint8Array([...header(100, 4), 0x11, 0, 1, 0xf1]), [4]);
    assertEquals(r.answers.map(code), ["none"], "length longer than the body: nothing to answer");
    assert(r.closed, "and the connection closes at end of stream");

    const shortened = ping(5);
    new DataView(shortened.buffer).setUint16(2, 2);
    r = await exchange(s, shortened, [5]);
    assertEquals(r.answers.map(code), [ErrorCode.FORMAT], "length shorter than the body: FORMAT for its id");
    assert(r.closed, "the rest cannot be framed; closed at end of stream");

    r = await exchange(s, new Uint8Array([...header(4, 6), 0x11, 0, 9, 0xf1, ...ping(7)]), [6, 7]);
    assertEquals(r.answers.map(code), [ErrorCode.FORMAT, "pong"], "item length past the end: FORMAT, and the next frame is answered");

    r = await exchange(s, new Uint8Array([...header(0, 8), ...ping(9)]), [8, 9]);
    assertEquals(r.answers.map(code), [ErrorCode.FORMAT, "pong"], "empty body: FORMAT (no opcode)");

    const garbage = crypto.getRandomValues(new Uint8Array(64 * 1024));
    garbage[0] = 0x7f;
    r = await exchange(s, new Uint8Array([...garbage, ...ping(10)]), [10]);
    assert(r.closed, "64 KiB of garbage: the connection closes");
    const framedGarbage = crypto.getRandomValues(new Uint8Array(64 * 1024));
    framedGarbage.set(header(65535 - 8, 11));
    r = await exchange(s, new Uint8Array([...framedGarbage, ...ping(12)]), [11, 12]);
    assert(r.closed, "64 KiB of garbage behind a valid header: answered or closed, never hung");

    assertEquals((await bystander.request({ opcode: Opcode.PING })).kind, "pong", "other connections never noticed");
    assertEquals(s.server.stats.framingLost >= 3, true);
  } finally {
    bystander.close();
    await s.close();
  }
});

Deno.test("keyless: a frame that does not arrive whole in time closes only its connection", async () => {
  const s = await start(undefined, { frameTimeoutMs: 200 });
  const bystander = await KeylessClient.connect(s.unix);
  const slow = await Deno.connect(s.tcp);
  try {
    const ping = encodeMessage({ id: 1, opcode: Opcode.PING, payload: Uint8Array.of(9) });
    // Half a frame, then one more byte well inside the deadline: dribbling does not extend it.
    await slow.write(ping.subarray(0, 20));
    await new Promise((resolve) => setTimeout(resolve, 100));
    await slow.write(ping.subarray(20, 21));
    const closed = await slow.read(new Uint8Array(16)).then((n) => n === null, () => true);
    assert(closed, "the server closed the connection holding a partial frame");
    assertEquals(s.server.stats.framingLost, 1);
    assertEquals((await bystander.request({ opcode: Opcode.PING })).kind, "pong", "other connections never noticed");

    // A connection that sits idle with no partial frame is left open and still answers.
    const idle = await KeylessClient.connect(s.tcp);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assertEquals((await idle.request({ opcode: Opcode.PING })).kind, "pong", "an idle connection stays open");
    idle.close();
  } finally {
    try {
      slow.close();
    } catch {
      // already closed by the server
    }
    bystander.close();
    await s.close();
  }
});

Deno.test("keyless: 1,000 multiplexed requests with bad ones mixed in; every answer under its own id", async () => {
  const s = await start();
  const client = await KeylessClient.connect(s.unix);
  const p256Pub = await crypto.subtle.importKey("spki", p256.spki, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  try {
    const kinds: string[] = [];
    const frames: Uint8Array[] = [];
    const messages: Uint8Array<ArrayBuffer>[] = [];
    for (let i = 0; i < 1000; i++) {
      const id = 5000 + i;
      const m = new TextEncoder().encode(`message ${i}`);
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", m));
      messages.push(m);
      let kind: string;
      let frame: Uint8Array;
      switch (i % 10) {
        case 3:
          kind = "key_not_found";
          frame = encodeMessage({ id, opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: new Uint8Array(20).fill(i & 0xff) });
          break;
        case 5:
          kind = "bad_opcode";
          frame = encodeMessage({ id, opcode: Opcode.RSA_DECRYPT, payload: digest, ski: skiOf(rsa) });
          break;
        case 7:
          kind = "format";
          frame = encodeItems(id, [{ tag: Tag.OPCODE, data: Uint8Array.of(Opcode.ECDSA_SIGN_SHA256) }, { tag: Tag.PAYLOAD, data: new Uint8Array(5) }, { tag: Tag.SKI, data: skiOf(p256) }]);
          break;
        case 8:
          kind = "malformed";
          frame = new Uint8Array([...header(4, id), 0x11, 0x00, 0x09, 0xf1]);
          break;
        case 9:
          kind = i % 100 === 99 ? "rsa" : "ping";
          frame = kind === "rsa"
            ? encodeMessage({ id, opcode: Opcode.RSA_PSS_SIGN_SHA256, payload: digest, certificateDigest: names.get(rsa.id)!.certificateDigest })
            : encodeMessage({ id, opcode: Opcode.PING, payload: Uint8Array.of(i & 0xff) });
          break;
        default:
          kind = "ecdsa";
          frame = encodeMessage({ id, opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: skiOf(p256) });
      }
      kinds.push(kind);
      frames.push(frame);
    }
    const order: number[] = [];
    const answers = kinds.map((_, i) => client.expect(5000 + i, 60_000).then((r) => (order.push(r.id), r)));
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      all.set(f, at);
      at += f.length;
    }
    await client.write(all);
    const results = await Promise.all(answers);
    for (let i = 0; i < results.length; i++) {
      const res = results[i];
      const what = `request ${i} (${kinds[i]})`;
      assertEquals(res.id, 5000 + i, what);
      switch (kinds[i]) {
        case "ecdsa":
          assert(res.kind === "ok", what);
          assert(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, p256Pub, ecdsaDerToRaw(res.payload, 32), messages[i]), what);
          break;
        case "rsa":
          assert(res.kind === "ok", what);
          assert(await webCryptoAgrees(rsa, "pss", "sha256", messages[i], res.payload.slice()), what);
          break;
        case "ping":
          assertEquals(res, { id: 5000 + i, kind: "pong", payload: Uint8Array.of(i & 0xff) }, what);
          break;
        default: {
          const expected = { key_not_found: ErrorCode.KEY_NOT_FOUND, bad_opcode: ErrorCode.BAD_OPCODE, format: ErrorCode.FORMAT, malformed: ErrorCode.FORMAT }[kinds[i]];
          assertEquals(res.kind === "error" ? res.code : res, expected, what);
        }
      }
    }
    assert(order.some((id, i) => i > 0 && id < order[i - 1]), "answers came back out of order (errors and pings do not wait for signatures)");
    assertEquals((await client.request({ opcode: Opcode.PING })).kind, "pong");
  } finally {
    client.close();
    await s.close();
  }
});

Deno.test("keyless: transient signer or key store failures answer INTERNAL, never KEY_NOT_FOUND", async () => {
  const compartment = openCompartment({ wasm: WASM, keysDir: `${root}/keys` });
  let mode: "sign-traps" | "throws" | "ok" = "sign-traps";
  const s = await start((request) => {
    if (mode === "throws") throw new Error("storage timeout");
    if (mode === "sign-traps" && request[0] === Op.SIGN) return Uint8Array.of(Status.GUEST_TRAPPED);
    return compartment.handle(request);
  });
  const client = await KeylessClient.connect(s.tcp);
  const sign = () => client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski: skiOf(p256) });
  const code = (r: Response) => r.kind === "error" ? r.code : r.kind;
  try {
    assertEquals(code(await sign()), ErrorCode.INTERNAL, "the guest trapped");
    mode = "throws";
    assertEquals(code(await sign()), ErrorCode.INTERNAL, "the signer threw");
    mode = "ok";
    assertEquals(code(await sign()), "ok", "served again once the failure passed");
  } finally {
    client.close();
    await s.close();
  }
  // A key store's name index that cannot answer is transient too.
  let storeDown = true;
  const byName = new KeylessServer({
    service: guestService((r) => compartment.handle(r)),
    keys: { findKey: (by) => storeDown ? Promise.reject(new Error("connection refused")) : Promise.resolve(by.ski?.toHex() === skiOf(p256).toHex() ? p256.id : undefined) },
  });
  const addr = byName.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const viaStore = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: addr.port });
  try {
    const signByName = (ski: Uint8Array) => viaStore.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski });
    assertEquals(code(await signByName(skiOf(p256))), ErrorCode.INTERNAL, "the store is down");
    storeDown = false;
    assertEquals(code(await signByName(skiOf(p256))), "ok");
    assertEquals(code(await signByName(new Uint8Array(20))), ErrorCode.KEY_NOT_FOUND, "the store answered: no such name");
  } finally {
    viaStore.close();
    await byName.close();
  }
});

Deno.test("keyless: pending requests per connection are capped; the server reads on as answers go out", async () => {
  const compartment = openCompartment({ wasm: WASM, keysDir: `${root}/keys` });
  const s = await start(async (request) => {
    await new Promise((r) => setTimeout(r, 2));
    return compartment.handle(request);
  }, { maxPendingPerConnection: 4 });
  const client = await KeylessClient.connect(s.unix);
  try {
    const answers = [];
    for (let i = 0; i < 60; i++) answers.push(client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32).fill(i), ski: skiOf(p256) }));
    const results = await Promise.all(answers);
    assert(results.every((r) => r.kind === "ok"));
    assertEquals(s.server.stats.maxPending, 4);
  } finally {
    client.close();
    await s.close();
  }
});

Deno.test("keyless: bounded fuzz over TCP never crashes or hangs the server", async () => {
  const s = await start();
  try {
    const seed = Number(Deno.env.get("KEYCELL_FUZZ_SEED") ?? Date.now() % 100000);
    const report = await fuzzKeyless(s.tcp, { iterations: 1000, seed, skis: keys.map(skiOf) });
    assertEquals(report.cases, 1000, `seed ${seed}`);
    assert(report.framed > 0 && report.closedByServer + report.survived > 0, JSON.stringify(report));
  } finally {
    await s.close();
  }
});

Deno.test("keyless: TLS with client-certificate authentication", async () => {
  const dir = await tempDir("keycell-tls-");
  const ssl = (...args: string[]) => openssl(args);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await ssl("req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.crt`, "-subj", "/CN=keycell test CA", "-days", "1");
  await Deno.writeTextFile(`${dir}/server.ext`, "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  await Deno.writeTextFile(`${dir}/client.ext`, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  for (const [name, signer] of [["server", "ca"], ["client", "ca"], ["intruder", undefined]] as const) {
    if (signer === undefined) {
      await ssl("req", "-x509", ...ec, "-keyout", `${dir}/${name}.key`, "-out", `${dir}/${name}.crt`, "-subj", `/CN=${name}`, "-days", "1", "-addext", "extendedKeyUsage=clientAuth");
      continue;
    }
    await ssl("req", ...ec, "-keyout", `${dir}/${name}.key`, "-out", `${dir}/${name}.csr`, "-subj", `/CN=${name}`);
    await ssl("x509", "-req", "-in", `${dir}/${name}.csr`, "-CA", `${dir}/ca.crt`, "-CAkey", `${dir}/ca.key`, "-CAcreateserial", "-out", `${dir}/${name}.crt`, "-days", "1", "-extfile", `${dir}/${name}.ext`);
  }
  const read = (f: string) => Deno.readTextFileSync(`${dir}/${f}`);
  const compartment = openCompartment({ wasm: WASM, keysDir: `${root}/keys` });
  const audit = AuditLog.open<KeylessAuditRecord>(`${dir}/audit.log`);
  const server = new KeylessServer({ service: guestService((r) => compartment.handle(r)), keys: fixtureKeys, audit });
  const { port } = await server.listenTls({ hostname: "127.0.0.1", port: 0, cert: read("server.crt"), key: read("server.key"), clientCa: read("ca.crt") });
  const attempt = async (certName?: string): Promise<string> => {
    let conn: Deno.TlsConn;
    try {
      conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port,
        caCerts: [read("ca.crt")],
        ...(certName ? { cert: read(`${certName}.crt`), key: read(`${certName}.key`) } : {}),
      });
      await conn.handshake();
    } catch (err) {
      return `handshake failed: ${(err as Error).name}`;
    }
    const client = new KeylessClient(conn);
    try {
      const res = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski: skiOf(p256) }, 3_000);
      if (res.kind !== "ok") return res.kind;
      const priv = await client.request({ opcode: Opcode.KEYCELL_KEY_SERVICE, payload: Uint8Array.of(Method.HEALTH) }, 3_000);
      return priv.kind === "error" && priv.code === ErrorCode.BAD_OPCODE ? "signed" : "private opcode accepted over TLS";
    } catch (err) {
      return `refused: ${(err as Error).message}`;
    } finally {
      client.close();
    }
  };
  try {
    assertEquals(await attempt("client"), "signed", "a client certificate from the CA is accepted");
    assert((await attempt()) !== "signed", "no client certificate: refused");
    assert((await attempt("intruder")) !== "signed", "a certificate from another CA: refused");
    assertEquals(await attempt("client"), "signed", "and the server still serves");
    await server.close();
    await audit.close();
    const records = (await readAudit(`${dir}/audit.log`)).map(({ remote, client, opcode, error }) => ({ remote, client, opcode, error }));
    const signed = { remote: "127.0.0.1", client: "client", opcode: "ECDSA_SIGN_SHA256", error: undefined };
    const refused = { remote: "127.0.0.1", client: "client", opcode: "KEYCELL_KEY_SERVICE", error: "BAD_OPCODE" };
    assertEquals(records, [signed, refused, signed, refused], "each request of an authenticated client, under its certificate's name");
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

async function readAudit(path: string): Promise<KeylessAuditRecord[]> {
  return (await Deno.readTextFile(path)).trim().split("\n").map((line) => JSON.parse(line));
}

Deno.test("keyless: the audit log records each TCP request (opcode, SKI, key, error), and none of the private socket's", async () => {
  const dir = await Deno.makeTempDir();
  const audit = AuditLog.open<KeylessAuditRecord>(`${dir}/audit.log`);
  const s = await start(undefined, { audit });
  const tcp = await KeylessClient.connect(s.tcp);
  const unix = await KeylessClient.connect(s.unix);
  try {
    const unknown = new Uint8Array(20).fill(0xab);
    assertEquals((await tcp.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski: skiOf(p256) })).kind, "ok");
    assertEquals((await tcp.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski: unknown })).kind, "error");
    assertEquals((await tcp.request({ opcode: 0x77, payload: new Uint8Array(32) })).kind, "error");
    assertEquals((await unix.request({ opcode: Opcode.KEYCELL_KEY_SERVICE, payload: Uint8Array.of(Method.HEALTH) })).kind, "ok");
    assertEquals((await unix.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski: skiOf(p256) })).kind, "ok");
    tcp.close();
    unix.close();
    await s.close();
    await audit.close();
    const records = await readAudit(`${dir}/audit.log`);
    assertEquals(records.map(({ remote, opcode, ski, keyId, error }) => ({ remote, opcode, ski, keyId, error })), [
      { remote: "127.0.0.1", opcode: "ECDSA_SIGN_SHA256", ski: skiOf(p256).toHex(), keyId: p256.id, error: undefined },
      { remote: "127.0.0.1", opcode: "ECDSA_SIGN_SHA256", ski: unknown.toHex(), keyId: undefined, error: "KEY_NOT_FOUND" },
      { remote: "127.0.0.1", opcode: "0x77", ski: undefined, keyId: undefined, error: "BAD_OPCODE" },
    ]);
    for (const r of records) assert(Date.parse(r.time) > 0 && r.ms >= 0 && r.client === undefined, JSON.stringify(r));
  } finally {
    tcp.close();
    unix.close();
    await s.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("keyless: a second server on a live Unix socket is refused, unless it takes the socket over; the old one's exit leaves it in place", async () => {
  const dir = await tempDir("keycell-takeover-");
  const socket = `${dir}/keyserver.sock`;
  const service = guestService(() => new Uint8Array([Status.OK]));
  const old = new KeylessServer({ service, keys: fixtureKeys });
  const next = new KeylessServer({ service, keys: fixtureKeys });
  try {
    await old.listenUnix(socket);
    const kept = await KeylessClient.connect({ transport: "unix", path: socket });
    await assertRejects(() => next.listenUnix(socket), Error, "a key server is already listening");
    await next.listenUnix(socket, { takeOver: true });
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["keyserver.sock"], "renamed into place, nothing left beside it");
    assertEquals(Deno.statSync(socket).mode! & 0o777, 0o600);
    assertEquals((await kept.request({ opcode: Opcode.PING })).kind, "pong", "the old server keeps its connections");
    const closing = old.close(10_000);
    await kept.closed;
    assertEquals((await closing).cut, 0);
    const fresh = await KeylessClient.connect({ transport: "unix", path: socket });
    assertEquals((await fresh.request({ opcode: Opcode.PING })).kind, "pong", "the path still reaches the new server");
    fresh.close();
  } finally {
    await old.close();
    await next.close();
  }
  assertEquals([...Deno.readDirSync(dir)], [], "the last server removed its own socket");
});
