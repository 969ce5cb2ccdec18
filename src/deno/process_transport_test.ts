import { assert, assertEquals } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { openCompartment } from "../guest/files.ts";
import { decodeResponse, encodeRequest, Op, Status } from "../core/protocol.ts";
import { KeylessServer, type SignerFunction } from "../keyless/server.ts";
import { KeylessClient } from "../keyless/client.ts";
import { Opcode } from "../keyless/codec.ts";
import { ProtocolSignerClient } from "../core/signer_client.ts";
import { ProcessTransport } from "./process_transport.ts";
import { startKeycell } from "../../test/_command.ts";
import { wasmModule } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";

const root = await tempDir("keycell-process-");
const keys = await makeKeys(root, ["ECC_NIST_P256"]);
const keysDir = `${root}/keys`;

async function inProcessServer(signer?: SignerFunction): Promise<{ server: KeylessServer; socketPath: string }> {
  const compartment = openCompartment({ wasm: wasmModule(), keysDir });
  const dir = await tempDir("keycell-process-sock-");
  // These tests reach the guest through the private opcode only; no Keyless name resolves to a key.
  const server = new KeylessServer({
    signer: signer ?? ((r) => compartment.handle(r)),
    keys: { findKey: () => Promise.resolve(undefined) },
    keyFiles: () => compartment.keyFiles,
  });
  await server.listenUnix(`${dir}/keyserver.sock`);
  return { server, socketPath: `${dir}/keyserver.sock` };
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

Deno.test("process: starts a key server child when none listens, and stops it on close", async () => {
  const transport = await ProcessTransport.start({ keysDir });
  const pid = transport.keyServerPid!;
  assert(transport.startedKeyServer && alive(pid));
  assertEquals(transport.keyFiles.filter((f) => f.id).map((f) => f.id), [keys[0].id]);
  const client = new ProtocolSignerClient(transport);
  assertEquals((await client.listKeys()).map((k) => k.id), [keys[0].id]);
  await client.close();
  assert(!alive(pid), "the child is gone after close");
  assertEquals(decodeResponse(await transport.request(encodeRequest(Op.LIST))).status, Status.UNAVAILABLE);
});

Deno.test("process: uses a key server already listening on the socket", async () => {
  const { server, socketPath } = await inProcessServer();
  const transport = await ProcessTransport.start({ socketPath, keysDir });
  try {
    assertEquals(transport.startedKeyServer, false);
    const client = new ProtocolSignerClient(transport);
    assertEquals((await client.getKey(keys[0].id)).id, keys[0].id);
  } finally {
    await transport.close();
    await server.close();
  }
});

Deno.test("process: a slow key server times out as UNAVAILABLE, with no retry", async () => {
  const compartment = openCompartment({ wasm: wasmModule(), keysDir });
  let calls = 0;
  let slow = false;
  const { server, socketPath } = await inProcessServer(async (request) => {
    if (slow && request[0] === Op.HEALTH) {
      calls++;
      await new Promise((r) => setTimeout(r, 400));
    }
    return compartment.handle(request);
  });
  const transport = await ProcessTransport.start({ socketPath, requestTimeoutMs: 100 });
  try {
    slow = true;
    const started = performance.now();
    assertEquals(decodeResponse(await transport.request(encodeRequest(Op.HEALTH))).status, Status.UNAVAILABLE);
    assert(performance.now() - started < 350, "answered at the request timeout");
    await new Promise((r) => setTimeout(r, 500));
    assertEquals(calls, 1, "the timed-out request was not sent again");
    slow = false;
    assertEquals(decodeResponse(await transport.request(encodeRequest(Op.HEALTH))).status, Status.OK, "the connection still serves");
  } finally {
    await transport.close();
    await server.close();
  }
});

Deno.test("process: a key server that goes away answers 503-style UNAVAILABLE; a child of ours is restarted", async () => {
  const { server, socketPath } = await inProcessServer();
  const external = await ProcessTransport.start({ socketPath, connectTimeoutMs: 250 });
  await server.close();
  const started = performance.now();
  assertEquals(decodeResponse(await external.request(encodeRequest(Op.HEALTH))).status, Status.UNAVAILABLE);
  assert(performance.now() - started < 1000, "no long wait for a server that is not there");
  await external.close();

  const owned = await ProcessTransport.start({ keysDir });
  try {
    const first = owned.keyServerPid!;
    Deno.kill(first, "SIGKILL");
    while (alive(first)) await new Promise((r) => setTimeout(r, 20));
    let status: number = Status.UNAVAILABLE;
    for (let i = 0; i < 3 && status !== Status.OK; i++) {
      status = decodeResponse(await owned.request(encodeRequest(Op.HEALTH))).status;
    }
    assertEquals(status, Status.OK, "a new key server serves");
    assert(owned.keyServerPid !== first);
  } finally {
    await owned.close();
  }
});

Deno.test("keyserver command: unix socket 0600 and TCP, ready line, its audit log, clean SIGTERM", async () => {
  const dataDir = await tempDir("keycell-keyserver-");
  const keyserver = await startKeycell("keyserver", {
    env: {
      KEYCELL_DATA_DIR: dataDir,
      KEYCELL_KEYS_DIR: keysDir,
      KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0",
      KEYCELL_KEYSERVER_AUDIT_LOG: `${dataDir}/keyserver-audit.log`,
    },
    ready: /ready on unix:(\S+), tcp:127\.0\.0\.1:(\d+) \(keys: 1, guest: wide\)/,
  });
  try {
    const { ready } = keyserver;
    assertEquals(ready[1], `${dataDir}/keyserver.sock`);
    assertEquals((await Deno.stat(ready[1])).mode! & 0o777, 0o600);
    const transport = await ProcessTransport.start({ socketPath: ready[1] });
    assertEquals(transport.startedKeyServer, false);
    assertEquals((await new ProtocolSignerClient(transport).listKeys()).length, 1);
    await transport.close();
    const tcp = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(ready[2]) });
    assertEquals((await tcp.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32), ski: new Uint8Array(20) })).kind, "error");
    tcp.close();
  } finally {
    assertEquals(await keyserver.stop(), 0);
  }
  assert(!(await Deno.stat(`${dataDir}/keyserver.sock`).then(() => true, () => false)), "the socket file is removed");
  const audit = (await Deno.readTextFile(`${dataDir}/keyserver-audit.log`)).trim().split("\n").map((line) => JSON.parse(line));
  assertEquals(audit.map(({ remote, opcode, error }) => ({ remote, opcode, error })), [{ remote: "127.0.0.1", opcode: "ECDSA_SIGN_SHA256", error: "KEY_NOT_FOUND" }], "written on SIGTERM; the private socket's listing is not in it");
});
