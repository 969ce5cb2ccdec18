import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { ecdsaDerToRaw } from "../../test/_fixtures.ts";
import { KeylessClient } from "../keyless/client.ts";
import { ErrorCode, Opcode, type Response } from "../keyless/codec.ts";
import { KeylessServer } from "../keyless/server.ts";
import { KeycellError } from "../core/errors.ts";
import { keylessNames } from "../core/key_names.ts";
import { RemoteKeyService } from "../core/key_service_rpc.ts";
import { startSealedSigner } from "./sealed_start.ts";
import { SqliteKeyStore } from "./store/sqlite.ts";
import { startKeyserverWithKey } from "../../test/_command.ts";
import { tempDir } from "../../test/_temp.ts";
import { WASM } from "../../test/_wasm.ts";
import { VERSION } from "../core/version.ts";

/**
 * A key server in this process over the sealed store in `dir`, as `keycell keyserver` runs one:
 * Keyless on TCP, and `serve`'s key-service RPC through its Unix socket.
 */
async function keyServerOn(dir: string) {
  const started = await startSealedSigner({ mode: "inline", wasm: WASM, store: SqliteKeyStore.open(`${dir}/keys.db`), masterKeyPath: `${dir}/master.key`, instances: 1 });
  const sealed = started.signer;
  const server = new KeylessServer({ service: sealed, keys: sealed });
  const socket = `${await tempDir("keycell-keyserver-sock-")}/keyserver.sock`;
  await server.listenUnix(socket);
  const { port } = server.listenTcp({ hostname: "127.0.0.1", port: 0 });
  const tcp = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port });
  const unix = await KeylessClient.connect({ transport: "unix", path: socket });
  // What `serve` in process mode holds: the same service, through the RPC on the private socket.
  const remote = new RemoteKeyService(async (request) => {
    const answer = await unix.request({ opcode: Opcode.KEYCELL_KEY_SERVICE, payload: request });
    if (answer.kind !== "ok") throw new Error(answer.kind);
    return answer.payload;
  });
  return {
    sealed,
    remote,
    signBySki: (ski: Uint8Array, digest: Uint8Array) => tcp.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski }),
    close: async () => {
      tcp.close();
      unix.close();
      await server.close();
      await sealed.close();
    },
  };
}

const code = (r: Response) => r.kind === "error" ? r.code : r.kind;

Deno.test("key server over the store: generated keys persist, sign after a restart (by SKI over Keyless too), and delete from the store", async () => {
  const dir = await tempDir("keycell-keyserver-store-");
  const first = await keyServerOn(dir);
  const key = await first.remote.generate("ECC_NIST_P256");
  assertEquals((await first.sealed.listKeys()).map((k) => k.id), [key.id], "the generated key is in the store");
  await first.close();

  // A new process: its guest holds nothing; the store names the key, and a signature opens it.
  const second = await keyServerOn(dir);
  try {
    assertEquals((await second.remote.listKeys()).map((k) => k.id), [key.id], "listed from the store");
    const message = new TextEncoder().encode("persisted");
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", message));
    const ski = keylessNames(key.publicKey)!.ski;
    const res = await second.signBySki(ski, digest);
    assert(res.kind === "ok", `Keyless sign by SKI of a key only the store held: ${JSON.stringify(res)}`);
    const signature = await second.remote.sign({ keyId: key.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: digest, signatureFormat: "RAW" });
    const pub = await crypto.subtle.importKey("spki", key.publicKey as Uint8Array<ArrayBuffer>, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    assert(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, signature as Uint8Array<ArrayBuffer>, message), "the unsealed key signs verifiably (WebCrypto)");

    await second.remote.deleteKey(key.id);
    assertEquals(await second.sealed.listKeys(), [], "deleting removes the key from the store");
    const notFound = (err: unknown) => err instanceof KeycellError && err.code === "key_not_found";
    await assertRejects(() => second.remote.sign({ keyId: key.id, algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: digest }), notFound, "a deleted key is not found, in the guest or the store");
    assertEquals(code(await second.signBySki(ski, digest)), ErrorCode.KEY_NOT_FOUND, "nor by its SKI");
  } finally {
    await second.close();
  }
});

Deno.test("key server over the store: a key added beside it (another process on the same store) is found at once, by name", async () => {
  const dir = await tempDir("keycell-keyserver-store-");
  const server = await keyServerOn(dir);
  const beside = await keyServerOn(dir);
  try {
    const digest = new Uint8Array(32).fill(1);
    const made = await beside.remote.generate("ECC_NIST_P256");
    // Unknown names answer KEY_NOT_FOUND from the same index, and do not hold up the next request.
    assertEquals(code(await server.signBySki(new Uint8Array(20), digest)), ErrorCode.KEY_NOT_FOUND);
    const res = await server.signBySki(keylessNames(made.publicKey)!.ski, digest);
    assert(res.kind === "ok", `a key another process stored is found by its SKI: ${JSON.stringify(res)}`);
  } finally {
    await beside.close();
    await server.close();
  }
});

Deno.test("keyserver command: signs on a pool of guests, KEYCELL_SIGNER_INSTANCES of them, the wide guest when KEYCELL_GUEST=wide", async () => {
  const { keyserver, key } = await startKeyserverWithKey({
    prefix: "keycell-keyserver-pool-",
    env: { KEYCELL_SIGNER_INSTANCES: "2", KEYCELL_GUEST: "wide" },
    ready: /ready on .*tcp:127\.0\.0\.1:(\d+) \(keys: 1, guest: wide\) with 2 guests, at most \d+ connections$/,
  });
  try {
    const { ready } = keyserver;
    const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(ready[1]) });
    const pub = await crypto.subtle.importKey("spki", key.spki, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    try {
      const messages = Array.from({ length: 40 }, (_, i) => new TextEncoder().encode(`handshake ${i}`));
      const answers = await Promise.all(messages.map(async (m) => {
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", m));
        return await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: keylessNames(key.spki)!.ski });
      }));
      for (const [i, res] of answers.entries()) {
        assert(res.kind === "ok", JSON.stringify(res));
        assert(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, ecdsaDerToRaw(res.payload, 32), messages[i]), `signature ${i}`);
      }
    } finally {
      client.close();
    }
  } finally {
    assertEquals(await keyserver.stop(), 0);
  }
});

Deno.test("keyserver command: its own metrics listener counts requests by opcode and outcome, with series at zero from the start", async () => {
  const { keyserver, root, key } = await startKeyserverWithKey({
    prefix: "keycell-keyserver-metrics-",
    env: { KEYCELL_SIGNER: "inline", KEYCELL_KEYSERVER_METRICS_LISTEN: "127.0.0.1:0" },
    ready: /ready on .*tcp:127\.0\.0\.1:(\d+), metrics:(http:\S+\/metrics) /,
  });
  try {
    const [, port, url] = keyserver.ready;
    const metric = async (line: string) => {
      const text = await (await fetch(url)).text();
      return text.split("\n").find((l) => l.startsWith(`${line} `))?.slice(line.length + 1);
    };
    assertEquals(await metric('keycell_keyless_requests_total{opcode="ECDSA_SIGN_SHA256",outcome="ok"}'), "0", "registered at zero");
    assertEquals(await metric('keycell_keyless_requests_total{opcode="RSA_PSS_SIGN_SHA256",outcome="ok"}'), "0");
    assert((await metric(`keycell_build_info{version="${VERSION}"}`)) === "1");

    const client = await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(port) });
    try {
      const digest = new Uint8Array(32).fill(3);
      const signed = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: keylessNames(key.spki)!.ski });
      assertEquals(signed.kind, "ok");
      const unknown = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: new Uint8Array(20) });
      assertEquals(unknown.kind === "error" && unknown.code, ErrorCode.KEY_NOT_FOUND);
      assertEquals(await metric('keycell_keyless_requests_total{opcode="ECDSA_SIGN_SHA256",outcome="ok"}'), "1");
      assertEquals(await metric('keycell_keyless_requests_total{opcode="ECDSA_SIGN_SHA256",outcome="KEY_NOT_FOUND"}'), "1");
      assertEquals(await metric('keycell_keyless_request_seconds_count{opcode="ECDSA_SIGN_SHA256"}'), "2");
      assertEquals(await metric("keycell_keyless_connections"), "1", "the open client connection");
      assertEquals(await metric("keycell_keyless_connections_refused_total"), "0");
    } finally {
      client.close();
    }
    const elsewhere = await fetch(url.replace(/\/metrics$/, "/v1/keys"));
    assertEquals([elsewhere.status, (await elsewhere.json()).error.code], [404, "not_found"], "only /metrics is served there");
  } finally {
    assertEquals(await keyserver.stop(), 0);
    await Deno.remove(root, { recursive: true });
  }
});
