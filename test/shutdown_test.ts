/**
 * SIGTERM stops `serve` within its drain deadline whatever clients do: a request in flight is
 * answered, and a client that never finishes its body cannot hold the server up.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startServer } from "./_command.ts";
import { tempDir } from "./_temp.ts";

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
