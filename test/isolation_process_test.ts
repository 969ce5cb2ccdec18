/**
 * The `process` signer mode's isolation claim, measured with the isolation suite's own tools: the
 * Hono process holds no key byte at all (not even in a guest memory: it has none), and the key
 * server process holds them only in its guest's linear memory.
 *
 * @module
 */

import { assert, assertEquals } from "./_assert.ts";
import { algorithmsFor, ALGORITHM_DETAILS, digestFor, makeKeys } from "./_fixtures.ts";
import { heapSnapshot } from "./_inspector.ts";
import { type Hit, type Pattern, scanBytes, scanProcess } from "./_procmem.ts";
import { componentsOf, keyOf, secretPatterns } from "./_secrets.ts";
import { startServer } from "./_server.ts";

const TAG = new TextEncoder().encode("keycell.guest.v1");

function describe(hits: Hit[]): string {
  return hits.slice(0, 8).map((h) => `${h.label} at 0x${h.address.toString(16)} in ${h.region.kind} ${h.region.perms} ${h.region.path || "(anonymous)"}`).join("\n");
}

/** The key server `serve` started: its child whose command line says `keyserver`. */
function keyServerPid(parent: number): number {
  const children = [...Deno.readDirSync(`/proc/${parent}/task`)]
    .flatMap((t) => Deno.readTextFileSync(`/proc/${parent}/task/${t.name}/children`).trim().split(/\s+/))
    .filter((p) => p !== "")
    .map(Number);
  const found = children.find((pid) => Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").includes("keyserver"));
  assert(found !== undefined, `serve started no key server (children: ${children.join(", ")})`);
  return found;
}

Deno.test("process: the Hono process holds no key byte; the key server holds them only in guest memory", async () => {
  const root = await Deno.makeTempDir({ prefix: "keycell-isolation-process-" });
  const keys = await makeKeys(root, ["RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384"]);
  const patterns: Pattern[] = [];
  for (const key of keys) {
    const pem = await Deno.readTextFile(key.path);
    const der = Uint8Array.fromBase64(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
    patterns.push(...secretPatterns(key.keySpec, await componentsOf(key.path), der));
  }
  const dataDir = await Deno.makeTempDir({ prefix: "keycell-isolation-process-data-" });
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "process", KEYCELL_KEYS_DIR: `${root}/keys` }, inspect: true });
  try {
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    const message = crypto.getRandomValues(new Uint8Array(100));
    for (const key of keys) {
      for (const algorithm of algorithmsFor(key.keySpec)) {
        const ecdsa = ALGORITHM_DETAILS[algorithm].scheme === "ECDSA";
        for (
          const body of [
            { algorithm, messageType: "DIGEST", message: (await digestFor(algorithm, message)).toBase64() },
            { algorithm, messageType: "RAW", message: message.toBase64(), ...(ecdsa ? { signatureFormat: "RAW" } : {}) },
          ]
        ) {
          const res = await fetch(`${server.url}/v1/keys/${key.id}/sign`, {
            method: "POST",
            headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
            body: JSON.stringify(body),
          });
          assertEquals(res.status, 200, `${key.keySpec} ${algorithm}`);
          await res.body?.cancel();
        }
      }
    }

    const hono = scanProcess(server.pid, patterns, TAG);
    assertEquals(hono.hits.length, 0, `key bytes in the Hono process:\n${describe(hono.hits)}`);
    assert(hono.bytesRead > 1_000_000, "the scan read the Hono process");
    const snapshot = await heapSnapshot(server.inspector!);
    assertEquals(scanBytes(snapshot, patterns).map((h) => h.label), [], "no key in any string of the Hono isolate's heap");

    const keyserver = scanProcess(keyServerPid(server.pid), patterns, TAG);
    const outside = keyserver.hits.filter((h) => h.region.kind !== "guest");
    assertEquals(outside.length, 0, `key bytes outside the key server's guest memory:\n${describe(outside)}`);
    for (const key of keys) {
      assert(keyserver.hits.some((h) => keyOf(h.label) === key.keySpec), `${key.keySpec} is found in the key server's guest memory (positive control)`);
    }
  } finally {
    assertEquals(await server.stop(), 0);
  }
});
