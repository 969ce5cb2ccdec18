/**
 * A zero-downtime upgrade of `serve` and `keyserver`: with KEYCELL_REUSE_PORT=1 a new server starts
 * on the address (and, for the key server, the Unix socket) of the running one, the old one is sent
 * SIGTERM and drains, and clients signing all along get a signature for every request that reached
 * a server. Without it, a second server on the same address stops with "address in use".
 */

import { assert, assertEquals } from "./_assert.ts";
import { runKeycell, startKeycell, startServer } from "./_command.ts";
import { makeKeys, tlsFiles } from "./_fixtures.ts";
import { tempDir } from "./_temp.ts";
import { KeylessClient, KeylessClientError } from "../src/keyless/client.ts";
import { Opcode } from "../src/keyless/codec.ts";
import { keylessNames } from "../src/core/key_names.ts";

// In `process` mode each `serve` starts a key server of its own, which takes over the socket.
for (const mode of ["inline", "process"]) {
  Deno.test(`serve (${mode}): a new server takes over the address of a draining one without a failed request (KEYCELL_REUSE_PORT=1)`, async () => {
    const dataDir = await tempDir("keycell-upgrade-");
    const env = { KEYCELL_SIGNER: mode, KEYCELL_REUSE_PORT: "1" };
    const old = await startServer({ dataDir, env });
    const listen = new URL(old.url).host;
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
    const created = await fetch(`${old.url}/v1/keys`, { method: "POST", headers, body: JSON.stringify({ keySpec: "ECC_NIST_P256" }) });
    assertEquals(created.status, 201);
    const { id } = await created.json();

    // A new connection for every request, so that requests land on whichever server accepts them.
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    const body = JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "RAW", message: btoa("upgrade") });
    const outcomes: string[] = [];
    let signing = true;
    const signer = (async () => {
      while (signing) {
        try {
          const res = await fetch(`${old.url}/v1/keys/${id}/sign`, { method: "POST", headers, body, client });
          await res.body?.cancel();
          outcomes.push(String(res.status));
        } catch (err) {
          outcomes.push((err as Error).message);
        }
      }
    })();

    let next: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      next = await startServer({ dataDir, env: { ...env, KEYCELL_LISTEN: listen } });
      const before = outcomes.length;
      assertEquals(await old.stop(), 0, "the old server drains and exits 0");
      // Keep signing until the new server alone has answered a good number of requests.
      while (outcomes.length < before + 200) await new Promise((r) => setTimeout(r, 20));
    } finally {
      signing = false;
      await signer;
      client.close();
      await next?.stop();
    }
    // Every answer is a signature. A connection still queued on the old listener when it closes is
    // reset before any request is read on it, unless the kernel hands it to the new listener
    // (net.ipv4.tcp_migrate_req=1, README "Upgrading without downtime"): then none may fail at all.
    const answered = outcomes.filter((o) => /^\d+$/.test(o));
    assertEquals(answered.filter((o) => o !== "200"), [], "every answer across the upgrade is a signature");
    const reset = outcomes.length - answered.length;
    const migrates = await Deno.readTextFile("/proc/sys/net/ipv4/tcp_migrate_req").then((t) => t.trim() === "1", () => false);
    assert(reset <= (migrates ? 0 : 2), `${reset} of ${outcomes.length} connections were reset: ${outcomes.filter((o) => !/^\d+$/.test(o))}`);
    assert(next !== undefined && next.lines.some((l) => l.startsWith("keycell ready on")));
    // A `serve` that started its key server names that server's guest; one it reused does not.
    if (mode === "process") assert(!next.lines.some((l) => l.includes("guest: the key server's")), next.lines.join("\n"));
  });
}

Deno.test("serve: without KEYCELL_REUSE_PORT a second server on a used address stops with one line", async () => {
  const dataDir = await tempDir("keycell-upgrade-");
  const first = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
  try {
    const second = await runKeycell("serve", { env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_SIGNER: "inline", KEYCELL_LISTEN: new URL(first.url).host } });
    assertEquals(second.code, 1);
    assert(/^keycell: the address is in use/m.test(second.stderr), second.stderr);
    assert(!second.stderr.includes("    at "), "no stack trace");
  } finally {
    await first.stop();
  }
});

/** Waits until `ready()` holds; the bound only keeps a broken server from hanging the suite. */
async function until(ready: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 3000 && !ready(); i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert(ready(), `never happened: ${what}`);
}

/**
 * A Keyless client signing all along, `inFlight` requests at a time on one connection, made again
 * when the server ends it. A request still unanswered when its stream ends was never read by that
 * server (it answers every request it reads before it ends the stream), so it is sent again on the
 * new connection, as a client of a keep-alive protocol does; `resent` counts them.
 */
function signContinuously(
  connect: () => Promise<KeylessClient>,
  ski: Uint8Array,
  digest: Uint8Array,
  options: { inFlight?: number; connectionPerRequest?: boolean } = {},
) {
  const state = { signed: 0, resent: 0, failed: [] as string[], why: new Set<string>() };
  const clients: KeylessClient[] = [];
  let client: KeylessClient | undefined;
  let connecting: Promise<KeylessClient> | undefined;
  const current = (): Promise<KeylessClient> => {
    if (options.connectionPerRequest) {
      // Each one lands on whichever listener the kernel picks while both servers listen.
      return connect().then((c) => (clients.push(c), c));
    }
    if (client !== undefined && !client.isClosed) return Promise.resolve(client);
    connecting ??= connect().then((c) => {
      clients.push(c);
      return client = c;
    }).finally(() => connecting = undefined);
    return connecting;
  };
  let running = true;
  const loops = Array.from({ length: options.inFlight ?? 4 }, async () => {
    while (running) {
      for (let attempt = 1;; attempt++) {
        let used: KeylessClient | undefined;
        try {
          used = await current();
          const res = await used.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski });
          if (res.kind === "ok") state.signed++;
          else state.failed.push(JSON.stringify(res));
          break;
        } catch (err) {
          // Ended before the answer, or a connection the old listener had queued and reset.
          const unread = err instanceof KeylessClientError ? err.reason !== "timeout" : true;
          if (!unread || attempt === 3) {
            state.failed.push((err as Error).message);
            break;
          }
          state.resent++;
          state.why.add((err as Error).message);
        } finally {
          if (options.connectionPerRequest) {
            used?.close();
            clients.splice(clients.indexOf(used!), 1);
          }
        }
      }
    }
  });
  return {
    state,
    async stop() {
      running = false;
      await Promise.all(loops);
      for (const c of clients) c.close();
    },
  };
}

for (const tls of [false, true]) {
  const net = tls ? "TLS" : "TCP";
  Deno.test(`keyserver: a new key server takes over the Unix socket and the ${net} address of a draining one, and every request is signed (KEYCELL_REUSE_PORT=1)`, async () => {
    const root = await tempDir("keycell-upgrade-");
    const [key] = await makeKeys(root, ["ECC_NIST_P256"]);
    const files = tls ? await tlsFiles(root) : undefined;
    const env: Record<string, string> = {
      KEYCELL_DATA_DIR: `${root}/data`,
      KEYCELL_KEYS_DIR: `${root}/keys`,
      KEYCELL_SIGNER_INSTANCES: "1",
      KEYCELL_REUSE_PORT: "1",
      KEYCELL_DRAIN_MS: "5000",
      ...(files ? { KEYCELL_KEYSERVER_TLS_CERT: files.certPath, KEYCELL_KEYSERVER_TLS_KEY: files.keyPath } : {}),
    };
    const ready = /ready on unix:(\S+), (?:tcp|tls):127\.0\.0\.1:(\d+)/;
    const old = await startKeycell("keyserver", {
      env: { ...env, KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0", KEYCELL_KEYSERVER_AUDIT_LOG: `${root}/old.log` },
      ready,
    });
    const [, socket, port] = old.ready;
    const ski = keylessNames(key.spki)!.ski;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("upgrade")));
    const connectNet = async () => {
      if (files === undefined) return await KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port: Number(port) });
      const conn = await Deno.connectTls({ hostname: "127.0.0.1", port: Number(port), caCerts: [files.ca] });
      await conn.handshake();
      return new KeylessClient(conn);
    };
    // A terminator's long-lived connection, and one connection per request, over TCP (or TLS) and Unix.
    const loads = {
      net: signContinuously(connectNet, ski, digest),
      netFresh: signContinuously(connectNet, ski, digest, { inFlight: 2, connectionPerRequest: true }),
      unix: signContinuously(() => KeylessClient.connect({ transport: "unix", path: socket }), ski, digest),
      unixFresh: signContinuously(() => KeylessClient.connect({ transport: "unix", path: socket }), ski, digest, { inFlight: 2, connectionPerRequest: true }),
    };
    const signed = () => Object.values(loads).map((l) => l.state.signed);
    let next: Awaited<ReturnType<typeof startKeycell>> | undefined;
    try {
      await until(() => signed().every((n) => n >= 50), "signing on the old key server");
      next = await startKeycell("keyserver", {
        env: { ...env, KEYCELL_KEYSERVER_LISTEN: `127.0.0.1:${port}`, KEYCELL_KEYSERVER_AUDIT_LOG: `${root}/new.log` },
        ready,
      });
      assertEquals(await old.stop(), 0, "the old key server drains and exits 0");
      // Keep signing until the new key server alone has answered a good number of requests.
      const before = signed();
      await until(() => signed().every((n, i) => n >= before[i] + 100), "signing on the new key server");
    } finally {
      for (const load of Object.values(loads)) await load.stop();
      await next?.stop();
    }
    const outcome = JSON.stringify(Object.fromEntries(Object.entries(loads).map(([name, l]) => [name, { ...l.state, why: [...l.state.why] }])));
    assertEquals(Object.values(loads).flatMap((l) => l.state.failed), [], `no request failed: ${outcome}`);
    // A client sends again only what it had in flight when the old server stopped reading: on a
    // long-lived connection its requests in flight (4); with a connection per request, one request
    // per connection open then (2). The Unix socket's path names the new server before the old one
    // stops, so no connection is left in the old one's queue; a TCP connection can be, and is reset
    // when that listener closes unless the kernel hands it over (net.ipv4.tcp_migrate_req=1).
    assert(loads.net.state.resent <= 4 && loads.unix.state.resent <= 4, outcome);
    assert(loads.unixFresh.state.resent <= 2, outcome);
    const migrates = await Deno.readTextFile("/proc/sys/net/ipv4/tcp_migrate_req").then((t) => t.trim() === "1", () => false);
    if (migrates) assert(loads.netFresh.state.resent <= 2, outcome);
    assert(!old.lines.some((l) => l.includes("stopped waiting")), old.lines.join("\n"));
    // Each server records every request it answers on its TCP or TLS listener: both served, and
    // between them they answered exactly what the client got.
    const records = async (log: string) => (await Deno.readTextFile(log)).trim().split("\n").length;
    const [before, after] = [await records(`${root}/old.log`), await records(`${root}/new.log`)];
    assert(before > 0 && after > 0, `old ${before}, new ${after}`);
    console.log(`keyserver upgrade over ${net} and Unix: ${outcome}; ${net} requests answered by the old server ${before}, by the new one ${after}`);
    assertEquals(before + after, loads.net.state.signed + loads.netFresh.state.signed, `every request a server read was answered: ${outcome}`);
    assert(!(await Deno.lstat(socket).then(() => true, () => false)), "the last key server removed its socket");
  });
}
