/**
 * keycell's central claim, measured: a running server holds key bytes in the guest's linear memory
 * and nowhere else. The suite starts `serve` as users do, drives signing through HTTP with every
 * key spec and algorithm, reads the whole process from outside, and checks where every secret
 * byte is: after loading, after deletion, after a guest trap, and after sustained load. In every
 * signer mode: `worker` and `inline` (only the guest's linear memory may hold key bytes),
 * `process` (the Hono process holds none at all; the key server only in its guest memory) and
 * `process` with KEYCELL_ENGINE=wasmtime (neither Deno process holds any; each wasmtime child of
 * the key server only in its guest's linear memory). And the key server run as several processes
 * (KEYCELL_KEYSERVER_PROCESSES): each only in its guest's linear memory, the process that starts
 * them none at all.
 *
 * A positive control runs first every time: a program that keeps a key in JS memory must be
 * caught by the same process scan and heap-snapshot check, or the suite fails.
 *
 * Writes isolation.json and isolation.md to .cache/reports/ (reports/ under `deno task isolation`). KEYCELL_ISOLATION_FULL=1 reads every
 * readable mapping instead of only present pages.
 *
 * @module
 */

import { assert, assertEquals } from "./_assert.ts";
import { type FixtureKey, makeKeys, pkcs8Of } from "./_fixtures.ts";
import { describeHits, type Hit, type Pattern, readRegionBytes, scanProcess } from "./_procmem.ts";
import { componentsOf, formOf, keyOf, rsaComponentsFromPrime, secretPatterns } from "./_secrets.ts";
import { type Api, apiClient, signEveryWay } from "./_server.ts";
import { keyserverChildren, startDeno, startKeycell, startServer, wasmtimeChildren } from "./_command.ts";
import { signEveryOpcode } from "./_keyless_sign.ts";
import { KeylessClient } from "../src/keyless/client.ts";
import { SELF_TEST_KEYS } from "../src/guest/self_test.ts";
import { GUEST_TAG, IsolationRecorder } from "./_isolation.ts";
import { tempDir } from "./_temp.ts";

/** Signer modes; `process+wasmtime` is `process` with KEYCELL_ENGINE=wasmtime (the guests in wasmtime children of the key server). */
const MODES = ["worker", "inline", "process", "process+wasmtime"] as const;
const SUSTAINED_SIGNS = 2000;

const recorder = new IsolationRecorder("isolation");
const root = await tempDir("keycell-isolation-");
const keys = await makeKeys(root);
const filePatterns = new Map<string, Pattern[]>();
for (const key of keys) {
  const der = await pkcs8Of(key.path);
  await Deno.writeFile(`${root}/public/${key.keySpec}.der`, der);
  filePatterns.set(key.keySpec, secretPatterns(key.keySpec, await componentsOf(key.path), der));
}

Deno.test("positive control: a key kept in JS memory is caught by the process scan and the heap snapshot", async () => {
  const key = keys.find((k) => k.keySpec === "RSA_2048")!;
  const control = await startDeno({
    args: ["--allow-read", new URL("./_leaky_control.ts", import.meta.url).pathname, key.path, `${root}/public/RSA_2048.der`],
    ready: /control ready/,
    inspect: true,
  });
  try {
    const { hits, snapshotHits } = await recorder.scan("control", "holding a key copy in JS", control.pid, filePatterns.get("RSA_2048")!, control.inspector);
    const outside = hits.filter((h) => h.region.kind !== "guest");
    assert(outside.some((h) => formOf(h.label) === "be"), "the Uint8Array copy of the DER is found in process memory");
    assert(outside.some((h) => formOf(h.label) === "pem"), "the PEM string is found in process memory");
    // Where each copy must be also checks the region classifier: a string lives on V8's heap, an
    // ArrayBuffer's bytes in the allocator's.
    assert(outside.some((h) => formOf(h.label) === "pem" && h.region.kind === "v8-heap"), "the PEM string is on the V8 heap");
    assert(outside.some((h) => formOf(h.label) === "be" && h.region.kind === "native-heap"), "the DER bytes are in the native heap");
    assert(snapshotHits.some((label) => formOf(label) === "pem"), "the PEM string is found in the heap snapshot");
  } finally {
    await control.stop();
  }
});

/** The key server `serve` started in `process` mode: its child whose command line says `keyserver`. */
function keyServerPid(parent: number): number {
  const [found] = keyserverChildren(parent);
  assert(found !== undefined, "serve started no key server");
  return found;
}

for (const mode of MODES) {
  Deno.test(`${mode}: key bytes are only in guest memory after loading, deletion, a trap and sustained load`, async () => {
    const wasmtime = mode === "process+wasmtime";
    const dataDir = await tempDir(`keycell-isolation-${mode.replace("+", "-")}-`);
    const server = await startServer({
      dataDir,
      // Both guest modules (the default is the 32-bit one alone): under V8, `auto` puts RSA keys in
      // the wide guest and EC keys in the 32-bit one, and wasmtime runs the wide guest for every
      // key; in process mode the key server inherits the setting.
      env: {
        KEYCELL_SIGNER: wasmtime ? "process" : mode,
        ...(wasmtime ? { KEYCELL_ENGINE: "wasmtime" } : {}),
        KEYCELL_KEYS_DIR: `${root}/keys`,
        KEYCELL_FAULT_INJECTION: "1",
        KEYCELL_GUEST: "auto",
      },
      inspect: true,
    });
    try {
      assertEquals(server.lines.some((l) => /keycell ready on .*guest: wide/.test(l)), true, server.lines.join("\n"));
      // In process mode the guest lives in the key server; the Hono process must hold no key byte at all.
      const keyServer = mode === "inline" || mode === "worker" ? undefined : keyServerPid(server.pid);
      // Where the guests are: serve itself, the key server, or the key server's wasmtime children.
      const guestPids = () => keyServer === undefined ? [server.pid] : wasmtime ? wasmtimeChildren(keyServer) : [keyServer];
      if (wasmtime) {
        assertEquals(guestPids().length, 2, "one wasmtime child per guest");
        // The positive control in the wasmtime host: it keeps the self-test's RSA key (public test
        // vectors, given to it at start) in its own heap, where the same scan must find it.
        const control = [{ bytes: SELF_TEST_KEYS[0].der, label: "self-test-RSA_2048 der be" }];
        for (const pid of guestPids()) {
          const { hits } = await recorder.scan("process+wasmtime (control)", "the self-test key the host keeps", pid, control);
          assert(hits.some((h) => h.region.kind === "native-heap"), `the scan finds the host's copy of the self-test key in its heap:\n${describeHits(hits)}`);
        }
      }
      const scanServer = async (phase: string, patterns: Pattern[]) => {
        const host = await recorder.scan(mode, phase, server.pid, patterns, server.inspector);
        if (keyServer === undefined) return host;
        assertEquals(host.hits.length, 0, `${phase}: key bytes in the Hono process:\n${describeHits(host.hits)}`);
        if (!wasmtime) return { ...await recorder.scan("process (key server)", phase, keyServer, patterns), snapshotHits: host.snapshotHits };
        const deno = await recorder.scan("process+wasmtime (key server)", phase, keyServer, patterns);
        assertEquals(deno.hits.length, 0, `${phase}: key bytes in the key server's own process:\n${describeHits(deno.hits)}`);
        const children = [];
        for (const pid of guestPids()) children.push(await recorder.scan("process+wasmtime (wasmtime host)", phase, pid, patterns));
        return { hits: children.flatMap((c) => c.hits), snapshotHits: host.snapshotHits };
      };
      const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
      const generated = await api("POST", "/v1/keys", { keySpec: "RSA_2048" });
      assertEquals(generated.status, 201);
      const genKey = fixtureOf(await generated.json());
      for (const key of [...keys, genKey]) await signEveryWay(api, key);

      // The generated key's secrets are known only inside the guest: find its prime there (which also
      // proves the scan reads guest memory), then search for all of its components everywhere.
      const genPatterns = await generatedKeyPatterns(guestPids(), genKey);
      const all = () => [...keys.flatMap((k) => filePatterns.get(k.keySpec)!), ...genPatterns];

      const loaded = await scanServer("keys loaded, every algorithm signed", all());
      assertOnlyInGuest(loaded.hits, "after loading");
      for (const key of [...keys.map((k) => k.keySpec), "generated-RSA_2048"]) {
        assert(loaded.hits.some((h) => keyOf(h.label) === key && h.region.kind === "guest"), `${key} is found in guest memory`);
      }
      assertEquals(loaded.snapshotHits, [], "no key in any string of the Hono isolate's heap");

      const fileRsa = keys.find((k) => k.keySpec === "RSA_2048")!;
      for (const id of [fileRsa.id, genKey.id]) assertEquals((await api("DELETE", `/v1/keys/${id}?immediately=true`)).status, 204);
      const deleted = await scanServer("after deleting RSA_2048 and the generated key", all());
      assertOnlyInGuest(deleted.hits, "after deletion");
      const survivors = deleted.hits.filter((h) => ["RSA_2048", "generated-RSA_2048"].includes(keyOf(h.label)));
      assertEquals(survivors.length, 0, `a deleted key left copies:\n${describeHits(survivors)}`);

      const trap = await api("POST", "/v1/faults/trap");
      assertEquals([trap.status, (await trap.json()).error.code], [500, "internal"]);
      await signEveryWay(api, keys.find((k) => k.keySpec === "ECC_NIST_P256")!);
      const trapped = await scanServer("after a guest trap and re-creation", all());
      assertOnlyInGuest(trapped.hits, "after a trap");

      await sustainedLoad(api, keys);
      const sustained = await scanServer(`after ${SUSTAINED_SIGNS} more signatures`, all());
      assertOnlyInGuest(sustained.hits, "after sustained load");
      assertEquals(sustained.snapshotHits, [], "no key in any string of the Hono isolate's heap");
    } finally {
      await server.stop();
    }
  });
}

Deno.test("keyserver, 2 processes: key bytes are only in each process's guest memory, none in the process that starts them", async () => {
  const dataDir = await tempDir("keycell-isolation-processes-");
  const keyserver = await startKeycell("keyserver", {
    env: {
      KEYCELL_DATA_DIR: dataDir,
      KEYCELL_KEYS_DIR: `${root}/keys`,
      KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0",
      KEYCELL_KEYSERVER_METRICS_LISTEN: "127.0.0.1:0",
      KEYCELL_KEYSERVER_PROCESSES: "2",
    },
    ready: /ready on .*tcp:127\.0\.0\.1:(\d+), metrics:(http:\S+) .* with 2 processes/,
  });
  try {
    const port = Number(keyserver.ready[1]);
    const byspec = (spec: string) => keys.find((k) => k.keySpec === spec)!;
    const metrics = async () => await (await fetch(keyserver.ready[2])).text();
    const count = (text: string, family: string, process: string) =>
      [...text.matchAll(new RegExp(`^${family}\\{process="${process}"(?:,[^}]*)?\\} (\\d+)$`, "gm"))].reduce((sum, m) => sum + Number(m[1]), 0);
    // Connections, 16 at a time, until the kernel has given each process some (all of 16 to one
    // happens 1 time in 32,768); then every opcode is signed on every one of them.
    const clients: KeylessClient[] = [];
    try {
      for (let batch = 0; batch < 4; batch++) {
        clients.push(...await Promise.all(Array.from({ length: 16 }, () => KeylessClient.connect({ transport: "tcp", hostname: "127.0.0.1", port }))));
        const text = await metrics();
        if (["0", "1"].every((p) => count(text, "keycell_keyless_connections", p) > 0)) break;
      }
      for (const client of clients) {
        await signEveryOpcode(client, { rsa: byspec("RSA_2048"), p256: byspec("ECC_NIST_P256"), p384: byspec("ECC_NIST_P384") });
      }
    } finally {
      for (const client of clients) client.close();
    }
    const text = await metrics();
    for (const process of ["0", "1"]) {
      const signed = count(text, "keycell_keyless_requests_total", process);
      assert(signed > 0, `process ${process} signed (${signed} requests over ${clients.length} connections):\n${text}\n${keyserver.lines.join("\n")}`);
    }
    const patterns = keys.flatMap((k) => filePatterns.get(k.keySpec)!);
    const starter = await recorder.scan("keyserver processes (the starting process)", "every opcode signed", keyserver.pid, patterns);
    assertEquals(starter.hits.length, 0, `key bytes in the process that starts the others:\n${describeHits(starter.hits)}`);
    const children = keyserverChildren(keyserver.pid);
    assertEquals(children.length, 2, "two key server processes");
    for (const [i, pid] of children.entries()) {
      const { hits } = await recorder.scan("keyserver processes (a key server process)", `every opcode signed, process ${i}`, pid, patterns);
      assertOnlyInGuest(hits, `key server process ${i}`);
      // Each process signed with these three on a connection of its own.
      for (const spec of ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"]) {
        assert(hits.some((h) => keyOf(h.label) === spec && h.region.kind === "guest"), `${spec} is found in process ${i}'s guest memory`);
      }
    }
  } finally {
    assertEquals(await keyserver.stop(), 0);
  }
});

function assertOnlyInGuest(hits: Hit[], when: string): void {
  const outside = hits.filter((h) => h.region.kind !== "guest");
  assertEquals(outside.length, 0, `${when}: key bytes outside the guest's linear memory:\n${describeHits(outside)}`);
}

function fixtureOf(json: { id: string; keySpec: FixtureKey["keySpec"]; publicKey: string }): FixtureKey {
  return { id: json.id, keySpec: json.keySpec, spki: Uint8Array.fromBase64(json.publicKey), path: "", publicPath: "" };
}

async function sustainedLoad(api: Api, all: FixtureKey[]): Promise<void> {
  const ec = all.filter((k) => k.keySpec.startsWith("ECC"));
  const rsa = all.filter((k) => k.keySpec.startsWith("RSA") && k.keySpec !== "RSA_2048");
  for (let done = 0; done < SUSTAINED_SIGNS; done += 16) {
    await Promise.all(Array.from({ length: 16 }, async (_, i) => {
      // Mostly ECDSA, as at the edge, with an RSA signature in every batch.
      const key = i === 0 ? rsa[(done / 16) % rsa.length] : ec[i % ec.length];
      const algorithm = key.keySpec.startsWith("RSA") ? "RSASSA_PSS_SHA_256" : "ECDSA_SHA_256";
      const res = await api("POST", `/v1/keys/${key.id}/sign`, {
        algorithm,
        messageType: "RAW",
        message: crypto.getRandomValues(new Uint8Array(64)).toBase64(),
      });
      assertEquals(res.status, 200);
      await res.body?.cancel();
    }));
  }
}

/**
 * Recovers a guest-generated RSA key's components: BoringSSL keeps its primes as little-endian
 * words, so every 4-byte-aligned window of prime length in guest memory whose value divides n is
 * a prime of the key.
 */
async function generatedKeyPatterns(pids: number[], key: FixtureKey): Promise<Pattern[]> {
  const pub = await crypto.subtle.importKey("spki", key.spki, { name: "RSA-PSS", hash: "SHA-256" }, true, ["verify"]);
  const jwk = await crypto.subtle.exportKey("jwk", pub);
  const n = bytesToBigInt(Uint8Array.fromBase64(jwk.n!, { alphabet: "base64url" }));
  const e = bytesToBigInt(Uint8Array.fromBase64(jwk.e!, { alphabet: "base64url" }));
  const primeBytes = Math.ceil(n.toString(16).length / 4);
  const guests = pids.flatMap((pid) => scanProcess(pid, [], GUEST_TAG).regions.filter((r) => r.kind === "guest").map((region) => ({ pid, region })));
  assert(guests.length > 0, "the server has a guest linear memory");
  for (const { pid, region } of guests) {
    for (const { bytes } of readRegionBytes(pid, region)) {
      for (let i = 0; i + primeBytes <= bytes.length; i += 4) {
        if ((bytes[i] & 1) === 0 || bytes[i + primeBytes - 1] < 0x80) continue;
        const candidate = bytesToBigInt(bytes.subarray(i, i + primeBytes).slice().reverse());
        if (n % candidate === 0n && candidate !== 1n && candidate !== n) {
          return secretPatterns("generated-RSA_2048", rsaComponentsFromPrime(n, e, candidate));
        }
      }
    }
  }
  throw new Error("the generated key's prime is not in guest memory: the scan cannot see the guest");
}

function bytesToBigInt(bytes: Uint8Array): bigint {
  return BigInt(`0x0${bytes.toHex()}`);
}
