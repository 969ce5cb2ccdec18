import { assert, assertEquals } from "../../test/_assert.ts";
import { ecdsaDerToRaw } from "../../test/_fixtures.ts";
import { keyserverChildren, startKeyserverWithKey } from "../../test/_command.ts";
import { KeylessClient } from "../keyless/client.ts";
import { Opcode } from "../keyless/codec.ts";
import { keylessNames } from "../core/key_names.ts";
import { mergeMetrics } from "./keyserver_processes.ts";

/** Connects `count` clients and has each sign one digest, checked against the key's public key. */
async function signOnEach(connect: () => Promise<KeylessClient>, count: number, spki: Uint8Array<ArrayBuffer>): Promise<KeylessClient[]> {
  const pub = await crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  const clients = await Promise.all(Array.from({ length: count }, connect));
  await Promise.all(clients.map(async (client, i) => {
    const message = new TextEncoder().encode(`handshake ${i}`);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", message));
    const res = await client.request({ opcode: Opcode.ECDSA_SIGN_SHA256, payload: digest, ski: keylessNames(spki)!.ski });
    assert(res.kind === "ok", JSON.stringify(res));
    assert(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, ecdsaDerToRaw(res.payload, 32), message), `signature ${i}`);
  }));
  return clients;
}

/** `keycell_keyless_connections` by process, from merged metrics. */
function connectionsByProcess(metrics: string): Map<string, number> {
  return new Map([...metrics.matchAll(/^keycell_keyless_connections\{process="(\d+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]));
}

Deno.test("keyserver with KEYCELL_KEYSERVER_PROCESSES=2: both processes sign on one address, one killed is started again, SIGTERM stops them all", async () => {
  const { keyserver, root, key } = await startKeyserverWithKey({
    prefix: "keycell-keyserver-processes-",
    env: { KEYCELL_KEYSERVER_METRICS_LISTEN: "127.0.0.1:0", KEYCELL_KEYSERVER_PROCESSES: "2" },
    ready: /ready on unix:\S+, tcp:127\.0\.0\.1:(\d+), metrics:(http:\S+) \(keys: 1, guest: baseline\) with 2 processes of 1 guest each/,
  });
  const clients: KeylessClient[] = [];
  try {
    const port = Number(keyserver.ready[1]);
    const metricsUrl = keyserver.ready[2];
    const first = keyserverChildren(keyserver.pid);
    assertEquals(first.length, 2, "two key server processes");
    assertEquals(keyserver.lines.filter((l) => /ready on/.test(l)).length, 1, `one ready line:\n${keyserver.lines.join("\n")}`);

    // 16 connections: the kernel gives each to one process; all on one would happen 1 time in 32,768.
    const tcp = () => KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port });
    clients.push(...await signOnEach(tcp, 16, key.spki));
    const metrics = await (await fetch(metricsUrl)).text();
    const connections = connectionsByProcess(metrics);
    assertEquals([...connections.keys()].sort(), ["0", "1"], metrics);
    assertEquals(connections.get("0")! + connections.get("1")!, 16);
    assert(connections.get("0")! > 0 && connections.get("1")! > 0, `both processes hold connections: ${[...connections]}`);
    assertEquals(metrics.match(/^# TYPE keycell_keyless_connections /gm)?.length, 1, "each family is described once");
    // The Unix socket is served too (by the first process).
    clients.push(...await signOnEach(() => KeylessClient.connect({ transport: "unix", path: `${root}/data/keyserver.sock` }), 1, key.spki));

    // A process that dies is started again; its clients reconnect and sign.
    Deno.kill(first[1], "SIGKILL");
    let now = first;
    for (let i = 0; i < 600 && (now.length !== 2 || now.includes(first[1])); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      now = keyserverChildren(keyserver.pid);
    }
    assertEquals(now.length, 2, "two key server processes again");
    assert(!now.includes(first[1]), "the killed process is replaced");
    assert(keyserver.lines.some((l) => /key server process 1 .* exited \(SIGKILL\); starting it again/.test(l)), keyserver.lines.join("\n"));
    // The new process is serving once its connections are counted in the metrics.
    for (let i = 0; i < 600 && !connectionsByProcess(await (await fetch(metricsUrl)).text()).has("1"); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    clients.push(...await signOnEach(tcp, 16, key.spki));
  } finally {
    for (const c of clients) c.close();
    const children = keyserverChildren(keyserver.pid);
    assertEquals(await keyserver.stop(), 0, keyserver.lines.join("\n"));
    for (const child of children) assert(!Deno.readDirSync("/proc").some((e) => e.name === String(child)), `process ${child} stopped`);
  }
});

Deno.test("mergeMetrics: one description per family, every sample labelled with its process", () => {
  const text = [
    "# HELP up Up",
    "# TYPE up gauge",
    "up 1",
    "# HELP seconds A histogram",
    "# TYPE seconds histogram",
    'seconds_bucket{le="0.1"} 2',
    "seconds_sum 0.3",
    "seconds_count 2",
    "",
  ].join("\n");
  assertEquals(
    mergeMetrics([{ process: 0, text }, { process: 1, text: text.replace("up 1", "up 0") }]),
    [
      "# HELP up Up",
      "# TYPE up gauge",
      'up{process="0"} 1',
      'up{process="1"} 0',
      "# HELP seconds A histogram",
      "# TYPE seconds histogram",
      'seconds_bucket{process="0",le="0.1"} 2',
      'seconds_sum{process="0"} 0.3',
      'seconds_count{process="0"} 2',
      'seconds_bucket{process="1",le="0.1"} 2',
      'seconds_sum{process="1"} 0.3',
      'seconds_count{process="1"} 2',
      "",
    ].join("\n"),
  );
});
