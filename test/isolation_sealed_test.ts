/**
 * The isolation claim for sealed keys: after generation, wrapped import, unsealing on a miss, a
 * master key rotation and deletion, key bytes are in the guest's linear memory and nowhere else in
 * the server process, and neither master key nor the wrapping key ever appears outside the guest.
 *
 * The test learns every secret independently of keycell: imported keys come from openssl, and the
 * generated keys and the wrapping key are opened from their sealed blobs in the store with
 * WebCrypto AES-GCM under the master key file (which also checks that the seal is plain
 * AES-256-GCM with the documented associated data). In `worker` and `inline` modes.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";
import { assert, assertEquals } from "./_assert.ts";
import { type FixtureKey, makeKeys } from "./_fixtures.ts";
import { IsolationRecorder, openBlob, pkcs8Patterns } from "./_isolation.ts";
import { describeHits, type Hit, type Pattern } from "./_procmem.ts";
import { componentsOf, keyOf, secretPatterns } from "./_secrets.ts";
import { apiClient, signEveryWay } from "./_server.ts";
import { runKeycell, type RunningServer, startServer } from "./_command.ts";
import { wrapForImport } from "./_wrap.ts";
import { tempDir } from "./_temp.ts";

const recorder = new IsolationRecorder("isolation-sealed");

async function scanOnlyInGuest(mode: string, server: RunningServer, patterns: Pattern[], when: string): Promise<Hit[]> {
  const { hits, regions, snapshotHits } = await recorder.scan(`${mode} (sealed keys)`, when, server.pid, patterns, server.inspector);
  assert(regions.some((r) => r.kind === "guest"), `${when}: the guest's memory was found`);
  const outside = hits.filter((h) => h.region.kind !== "guest");
  assertEquals(outside.length, 0, `${when}: secret bytes outside the guest's linear memory:\n${describeHits(outside)}`);
  assertEquals(snapshotHits, [], `${when}: no secret in any string of the Hono isolate's heap`);
  return hits;
}

function foundInGuest(hits: Hit[], label: string): boolean {
  return hits.some((h) => keyOf(h.label) === label && h.region.kind === "guest");
}

for (const mode of ["worker", "inline"] as const) {
  Deno.test(`${mode}: sealed keys are only in guest memory after generate, import, unseal on a miss, a master key rotation and delete`, async () => {
    const dataDir = await tempDir(`keycell-isolation-sealed-${mode}-`);
    // The wide guest, asked for explicitly (the default is the 32-bit one): these scans are of it.
    const env = { KEYCELL_SIGNER: mode, KEYCELL_GUEST: "wide" };
    let server = await startServer({ dataDir, env, inspect: true, timeoutMs: 60_000 });
    try {
      assertEquals(server.lines.some((l) => /keycell ready on .*guest: wide/.test(l)), true, server.lines.join("\n"));
      let api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
      const generated: FixtureKey[] = [];
      for (const keySpec of ["ECC_NIST_P256", "RSA_2048"]) {
        const res = await api("POST", "/v1/keys", { keySpec });
        assertEquals(res.status, 201);
        const json = await res.json();
        generated.push({ id: json.id, keySpec: json.keySpec, spki: Uint8Array.fromBase64(json.publicKey), path: "", publicPath: "" });
      }
      // A rotation: the new version is made in the guest, and goes with its name when that is deleted.
      const rotatedRes = await api("POST", `/v1/keys/${generated[0].id}/rotate`);
      assertEquals(rotatedRes.status, 200);
      const rotatedJson = await rotatedRes.json();
      const rotated: FixtureKey = { id: rotatedJson.primary, keySpec: "ECC_NIST_P256", spki: Uint8Array.fromBase64(rotatedJson.publicKey), path: "", publicPath: "" };
      const wrappingRes = await api("GET", "/v1/wrapping-key");
      assertEquals(wrappingRes.status, 200);
      const wrappingSpki = Uint8Array.fromBase64((await wrappingRes.json()).publicKey);
      const [imported] = await makeKeys(`${dataDir}/import`, ["ECC_NIST_P384"]);
      const importRes = await api("POST", "/v1/keys/import", {
        keySpec: "ECC_NIST_P384",
        wrappedKey: (await wrapForImport(dataDir, wrappingSpki, imported.path)).toBase64(),
      });
      assertEquals(importRes.status, 201);
      await importRes.body?.cancel();
      for (const key of [...generated, rotated, imported]) await signEveryWay(api, key);

      // Every secret, learnt without keycell's code.
      const master = await Deno.readFile(`${dataDir}/master.key`);
      const db = new DatabaseSync(`${dataDir}/keys.db`, { readOnly: true });
      const blobOf = (id: string) => (db.prepare("SELECT sealed FROM keys WHERE id = ?").get(id) as { sealed: Uint8Array }).sealed;
      const wrappingMeta = (db.prepare("SELECT value FROM meta WHERE name = 'wrapping_key'").get() as { value: Uint8Array }).value;
      const spkiLength = (wrappingMeta[32] << 8) | wrappingMeta[33];
      const wrappingDer = await openBlob(master, wrappingMeta.subarray(0, 32), wrappingMeta.subarray(34 + spkiLength));
      const patterns = [
        ...secretPatterns("master-key", { key: BigInt(`0x${master.toHex()}`) }),
        ...await pkcs8Patterns("wrapping-key", wrappingDer, dataDir),
        ...secretPatterns("imported-P384", await componentsOf(imported.path)),
      ];
      for (const key of generated) {
        const der = await openBlob(master, Uint8Array.fromHex(key.id), blobOf(key.id));
        patterns.push(...await pkcs8Patterns(`generated-${key.keySpec}`, der, dataDir));
      }
      patterns.push(...await pkcs8Patterns("rotated-ECC_NIST_P256", await openBlob(master, Uint8Array.fromHex(rotated.id), blobOf(rotated.id)), dataDir));
      db.close();

      const afterImport = await scanOnlyInGuest(mode, server, patterns, "after generate and import");
      for (const label of ["master-key", "imported-P384", "generated-ECC_NIST_P256", "generated-RSA_2048", "rotated-ECC_NIST_P256"]) {
        assert(foundInGuest(afterImport, label), `${label} is found in guest memory (the scan sees the guest)`);
      }
      assertEquals(afterImport.filter((h) => keyOf(h.label) === "wrapping-key").length, 0, "the wrapping key is zeroed after use");
      assertEquals(await server.stop(), 0);

      // A new process: every key comes back from its blob on first use.
      server = await startServer({ dataDir, env, inspect: true, timeoutMs: 60_000 });
      api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
      for (const key of [...generated, rotated, imported]) await signEveryWay(api, key);
      const afterUnseal = await scanOnlyInGuest(mode, server, patterns, "after unsealing on a miss");
      for (const label of ["master-key", "imported-P384", "generated-ECC_NIST_P256", "generated-RSA_2048", "rotated-ECC_NIST_P256"]) {
        assert(foundInGuest(afterUnseal, label), `${label} is found in guest memory after unsealing`);
      }

      // `keycell rotate-master-key` with the server stopped; then every key is unsealed under the new key.
      assertEquals(await server.stop(), 0);
      const rotation = await runKeycell("rotate-master-key", { env: { KEYCELL_DATA_DIR: dataDir } });
      const said = rotation.output;
      assertEquals(rotation.code, 0, said);
      assert(said.includes("resealed 4 keys and the wrapping key under the new master key"), said);
      assertEquals(await Deno.readFile(`${dataDir}/master.key.previous`), master);
      patterns.push(...secretPatterns("new-master-key", { key: BigInt(`0x${(await Deno.readFile(`${dataDir}/master.key`)).toHex()}`) }));
      server = await startServer({ dataDir, env, inspect: true, timeoutMs: 60_000 });
      api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
      for (const key of [...generated, rotated, imported]) await signEveryWay(api, key);
      const afterRotation = await scanOnlyInGuest(mode, server, patterns, "after a master key rotation");
      for (const label of ["new-master-key", "imported-P384", "generated-ECC_NIST_P256", "generated-RSA_2048", "rotated-ECC_NIST_P256"]) {
        assert(foundInGuest(afterRotation, label), `${label} is found in guest memory after the rotation`);
      }
      assertEquals(afterRotation.filter((h) => keyOf(h.label) === "master-key").length, 0, "the old master key is not loaded at all");

      // Deleting the P-256 key's name (by its first id) deletes its rotated version too.
      for (const key of [...generated, imported]) assertEquals((await api("DELETE", `/v1/keys/${key.id}?immediately=true`)).status, 204);
      assertEquals((await api("GET", `/v1/keys/${rotated.id}`)).status, 404);
      const afterDelete = await scanOnlyInGuest(mode, server, patterns, "after deleting sealed keys");
      const survivors = afterDelete.filter((h) => !keyOf(h.label).endsWith("master-key"));
      assertEquals(survivors.length, 0, `a deleted key left copies:\n${describeHits(survivors)}`);
    } finally {
      await server.stop();
      await Deno.remove(dataDir, { recursive: true });
    }
  });
}
