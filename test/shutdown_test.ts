/**
 * SIGTERM stops `serve` and `keyserver` within their drain deadline whatever clients do: requests
 * in flight are answered, and a client that never finishes its body, or never reads its answers,
 * cannot hold the server up.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startKeyserverWithKey, startServer } from "./_command.ts";
import { tempDir } from "./_temp.ts";
import { KeylessClient, KeylessClientError } from "../src/keyless/client.ts";
import { encodeMessage, Opcode } from "../src/keyless/codec.ts";
import { keylessNames } from "../src/core/key_names.ts";

Deno.test("serve: SIGTERM answers the request in flight, cuts a body that never ends after the drain deadline, exits 0", async () => {
  const dataDir = await tempDir("keycell-shutdown-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline", KEYCELL_DRAIN_MS: "500", KEYCELL_AUDIT_LOG: `${dataDir}/audit.log` } });
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const { port } = new URL(server.url);
  const slow = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  try {
    // The server is serving this connection once it has answered a request on it.
    await slow.write(new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    const first = new Uint8Array(4096);
    assert(new TextDecoder().decode(first.subarray(0, (await slow.read(first))!)).startsWith("HTTP/1.1 200"));
    // Then a body announced at 1,000 bytes of which 10 ever arrive.
    await slow.write(new TextEncoder().encode(
      `POST /v1/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"keySpec"`,
    ));
    const inFlight = fetch(`${server.url}/v1/keys`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ keySpec: "RSA_2048" }),
    });
    // Time for both requests to reach the server (RSA-2048 generation takes longer in the guest).
    await new Promise((resolve) => setTimeout(resolve, 300));
    // A server that ignored the deadline would wait for the slow client forever: end it and fail.
    const guard = setTimeout(() => Deno.kill(server.pid, "SIGKILL"), 30_000);
    const code = await server.stop();
    clearTimeout(guard);
    assertEquals(code, 0, server.lines.join("\n"));
    const answered = await inFlight.then((res) => res.status, () => "no answer");
    assert(answered === 201, `the request in flight was answered (${answered})`);
    assert(server.lines.some((l) => l.includes("stopped waiting for requests in flight")), server.lines.join("\n"));
    const audit = await Deno.readTextFile(`${dataDir}/audit.log`);
    assert(audit.includes('"status":201'), "the audit log was written out");
  } finally {
    try {
      slow.close();
    } catch {
      // closed by the server
    }
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("keyserver: SIGTERM under load answers every request it has read, cuts a client that never reads at the drain deadline, writes out the audit log, exits 0", async () => {
  const { keyserver, root, key } = await startKeyserverWithKey({
    prefix: "keycell-shutdown-",
    env: (root) => ({ KEYCELL_SIGNER_INSTANCES: "1", KEYCELL_DRAIN_MS: "3000", KEYCELL_KEYSERVER_AUDIT_LOG: `${root}/audit.log` }),
    ready: /ready on unix:(\S+), tcp:127\.0\.0\.1:(\d+)/,
  });
  const audit = `${root}/audit.log`;
  const [, socket, port] = keyserver.ready;
  const ski = keylessNames(key.spki)!.ski;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("shutdown")));
  // A client that never reads its answers, on the private socket (which the audit log leaves out).
  const deaf = await Deno.connect({ transport: "unix", path: socket });
  const ping = encodeMessage({ id: 1, opcode: Opcode.PING });
  const deafWriting = (async () => {
    for (let i = 0; i < 20_000; i++) await deaf.write(ping);
  })().catch(() => {});
  // Four TCP clients keeping eight signatures each in flight.
  const clients = await Promise.all(Array.from({ length: 4 }, () => KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(port) })));
  let signed = 0;
  let unread = 0;
  const failed: string[] = [];
  const loops = clients.flatMap((client) =>
    Array.from({ length: 8 }, async () => {
      while (!client.isClosed) {
        try {
          const res = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski });
          if (res.kind === "ok") signed++;
          else failed.push(JSON.stringify(res));
        } catch (err) {
          // The stream ended after the last answer: the server never read this request.
          if (err instanceof KeylessClientError && err.reason === "closed") unread++;
          else failed.push((err as Error).message);
        }
      }
    })
  );
  try {
    for (let i = 0; i < 1500 && signed < 300; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    assert(signed >= 300, `the clients sign (${signed})`);
    // A server that ignored the deadline would wait for the deaf client forever: end it and fail.
    const guard = setTimeout(() => Deno.kill(keyserver.pid, "SIGKILL"), 30_000);
    const code = await keyserver.stop();
    clearTimeout(guard);
    await Promise.all(loops);
    assertEquals(code, 0, keyserver.lines.join("\n"));
    assertEquals(failed, [], "every answer is a signature");
    assert(keyserver.lines.some((l) => l.includes("stopped waiting for 1 connection after 3000 ms")), keyserver.lines.join("\n"));
    const records = (await Deno.readTextFile(audit)).trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(records.length, signed, `every request the server read was answered and recorded (${unread} sent after it stopped reading)`);
    console.log(`keyserver SIGTERM under load: ${signed} signatures answered and recorded, ${unread} requests sent after it stopped reading`);
  } finally {
    for (const client of clients) client.close();
    deaf.close();
    await deafWriting;
  }
});
