import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { makeKeys } from "../../test/_fixtures.ts";
import { openCompartment } from "../guest/files.ts";
import { KeycellError } from "../core/errors.ts";
import { Op } from "../core/protocol.ts";
import { KeylessServer } from "../keyless/server.ts";
import { KeylessClient } from "../keyless/client.ts";
import { Opcode } from "../keyless/codec.ts";
import { guestService } from "../keyless/_test_keys.ts";
import { keyserverCommand, ProcessKeyService } from "./process_transport.ts";
import { alive, permissionsOf, startKeycell } from "../../test/_command.ts";
import { wasmModule } from "../../test/_wasm.ts";
import { tempDir } from "../../test/_temp.ts";

const root = await tempDir("keycell-process-");
const keys = await makeKeys(root, ["ECC_NIST_P256"]);
const keysDir = `${root}/keys`;

/** A key server in this process over a bare guest, as the tests below need one they can slow down. */
async function inProcessServer(
  guest?: (request: Uint8Array) => Uint8Array | Promise<Uint8Array>,
): Promise<{ server: KeylessServer; socketPath: string }> {
  const compartment = openCompartment({ wasm: wasmModule(), keysDir });
  const dir = await tempDir("keycell-process-sock-");
  // These tests reach the guest through the key-service RPC only; no Keyless name resolves to a key.
  const server = new KeylessServer({
    service: guestService(guest ?? ((r) => compartment.handle(r))),
    keys: { findKey: () => Promise.resolve(undefined) },
    keyFiles: () => compartment.keyFiles,
  });
  await server.listenUnix(`${dir}/keyserver.sock`);
  return { server, socketPath: `${dir}/keyserver.sock` };
}

const unavailable = (err: unknown) => err instanceof KeycellError && err.code === "signer_unavailable";

Deno.test("process: starts a key server child when none listens, and stops it on close", async () => {
  const service = await ProcessKeyService.start({ keysDir });
  const pid = service.keyServerPid!;
  assert(service.startedKeyServer && alive(pid));
  assertEquals(service.keyFiles.filter((f) => f.id).map((f) => f.id), [keys[0].id]);
  assertEquals((await service.listKeys()).map((k) => k.id), [keys[0].id]);
  await service.close();
  assert(!alive(pid), "the child is gone after close");
  await assertRejects(() => service.health(), unavailable);
});

Deno.test("process: uses a key server already listening on the socket", async () => {
  const { server, socketPath } = await inProcessServer();
  const service = await ProcessKeyService.start({ socketPath, keysDir });
  try {
    assertEquals(service.startedKeyServer, false);
    assertEquals((await service.getKey(keys[0].id)).id, keys[0].id);
    await assertRejects(() => service.getKey("ab".repeat(32)), (err) => err instanceof KeycellError && err.code === "key_not_found", "the service's own errors come through by code");
  } finally {
    await service.close();
    await server.close();
  }
});

Deno.test("process: a slow key server times out as signer_unavailable, with no retry", async () => {
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
  const service = await ProcessKeyService.start({ socketPath, requestTimeoutMs: 100 });
  try {
    slow = true;
    await assertRejects(() => service.health(), unavailable);
    await new Promise((r) => setTimeout(r, 500));
    assertEquals(calls, 1, "the timed-out request was not sent again");
    slow = false;
    await service.health(); // the connection still serves
  } finally {
    await service.close();
    await server.close();
  }
});

Deno.test("process: a key server that goes away is signer_unavailable (503); a child of ours is restarted", async () => {
  const { server, socketPath } = await inProcessServer();
  const external = await ProcessKeyService.start({ socketPath, connectTimeoutMs: 250 });
  await server.close();
  await assertRejects(() => external.health(), unavailable);
  await external.close();

  const owned = await ProcessKeyService.start({ keysDir });
  try {
    const first = owned.keyServerPid!;
    Deno.kill(first, "SIGKILL");
    while (alive(first)) await new Promise((r) => setTimeout(r, 20));
    let healthy = false;
    for (let i = 0; i < 3 && !healthy; i++) healthy = await owned.health().then(() => true, () => false);
    assert(healthy, "a new key server serves");
    assert(owned.keyServerPid !== first);
  } finally {
    await owned.close();
  }
});

Deno.test("process: after a kill -9 of our key server, only the request in flight fails; the next one waits for a new key server", async () => {
  const owned = await ProcessKeyService.start({ keysDir });
  try {
    for (let round = 0; round < 5; round++) {
      const first = owned.keyServerPid!;
      Deno.kill(first, "SIGKILL");
      // Until a request fails (one the dying key server had, or one sent on its connection before it
      // was seen to close): the next one must be answered.
      let failed = false;
      for (let i = 0; i < 100 && !failed; i++) failed = await owned.health().then(() => false, () => true);
      assert(failed, "a request in flight at the kill fails");
      await owned.health();
      assert(owned.keyServerPid !== first, "a new key server serves");
    }
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
    ready: /ready on unix:(\S+), tcp:127\.0\.0\.1:(\d+) \(keys: 1, guest: baseline\)/,
  });
  try {
    const { ready } = keyserver;
    assertEquals(ready[1], `${dataDir}/keyserver.sock`);
    assertEquals((await Deno.stat(ready[1])).mode! & 0o777, 0o600);
    const service = await ProcessKeyService.start({ socketPath: ready[1] });
    assertEquals(service.startedKeyServer, false);
    assertEquals((await service.listKeys()).length, 1);
    await service.close();
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

Deno.test("process: the key server is started as the keyserver task runs it, or as the compiled binary itself", () => {
  const run = keyserverCommand({ standalone: false, execPath: "/usr/bin/deno" });
  assertEquals(run.command, "/usr/bin/deno");
  assertEquals(run.args.slice(0, 1 + permissionsOf("keyserver").length), ["run", ...permissionsOf("keyserver")], "the keyserver task's permissions");
  assertEquals(run.args.slice(-2).map((a) => a.split("/").pop()), ["main.ts", "keyserver"]);
  // A binary made by deno compile has its entry point and permissions built in: it takes the command only.
  assertEquals(keyserverCommand({ standalone: true, execPath: "/usr/local/bin/keycell" }), { command: "/usr/local/bin/keycell", args: ["keyserver"] });
});
