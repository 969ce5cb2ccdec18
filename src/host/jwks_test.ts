import { generateKeyPairSync } from "node:crypto";
import { assertEquals, assertRejects } from "../../test/_assert.ts";
import { KeycellError } from "../core/errors.ts";
import type { SealedKeys } from "../core/sealed_keys.ts";
import type { KeyInfo, SignerClient } from "../core/signer_client.ts";
import { JwksPublisher } from "./jwks.ts";
import { catchLog } from "../../test/_log.ts";

/** Keys in memory, counting reads of the set, with a switch that makes the store fail. */
function fakes() {
  const spki = new Uint8Array(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ type: "spki", format: "der" }));
  const known = new Map<string, KeyInfo>();
  for (const id of ["a1", "b2", "c3"].map((p) => p.repeat(32))) known.set(id, { id, keySpec: "ECC_NIST_P256", publicKey: spki });
  const state = { set: new Set<string>(), reads: 0, down: false, gate: Promise.resolve() };
  const keys = {
    async jwksKeyIds() {
      state.reads++;
      const read = [...state.set].sort();
      await state.gate;
      if (state.down) throw new KeycellError("signer_unavailable", "the key store is not available");
      return read;
    },
    setJwks(id: string, on: boolean) {
      if (on) state.set.add(id);
      else state.set.delete(id);
      return Promise.resolve();
    },
  } as unknown as SealedKeys;
  const signer = {
    getKey: (id: string) =>
      known.has(id) ? Promise.resolve(known.get(id)!) : Promise.reject(new KeycellError("key_not_found", "no key with that id")),
  } as unknown as SignerClient;
  return { keys, signer, state, ids: [...known.keys()] };
}

const kids = async (jwks: JwksPublisher) => (await jwks.document()).keys.map((k) => k.kid);

Deno.test("JwksPublisher: one build serves every request within its time; a change made here shows at once", async () => {
  const { keys, signer, state, ids } = fakes();
  const jwks = new JwksPublisher(signer, keys, { ttlMs: 60_000 });
  state.set.add(ids[0]);
  const documents = await Promise.all(Array.from({ length: 50 }, () => jwks.document()));
  assertEquals(state.reads, 1, "fifty requests at once, one read of the set");
  assertEquals(documents[49].keys.map((k) => k.kid), [ids[0]]);
  await jwks.document();
  assertEquals(state.reads, 1, "cached");
  state.set.add(ids[1]);
  assertEquals(await kids(jwks), [ids[0]], "another node's change waits for the cache time");
  await jwks.mark(ids[2], true);
  assertEquals(await kids(jwks), ids, "this node's change shows at once");
  state.set.add("ff".repeat(32));
  jwks.forget();
  assertEquals(await kids(jwks), ids, "an id without a key is left out");
});

Deno.test("JwksPublisher: a build that overlapped a change is not cached; a store that fails serves the previous document", async () => {
  const { keys, signer, state, ids } = fakes();
  const jwks = new JwksPublisher(signer, keys, { ttlMs: 60_000 });
  state.set.add(ids[0]);
  state.set.add(ids[1]);
  let open!: () => void;
  state.gate = new Promise((resolve) => open = resolve);
  const slow = jwks.document();
  await jwks.mark(ids[0], false);
  open();
  assertEquals((await slow).keys.map((k) => k.kid), [ids[0], ids[1]], "read before the change");
  assertEquals(await kids(jwks), [ids[1]], "read again after the change");

  const fresh = new JwksPublisher(signer, keys, { ttlMs: 0 });
  state.down = true;
  await assertRejects(fresh.document(), (err) => err instanceof KeycellError && err.code === "signer_unavailable");
  state.down = false;
  assertEquals(await kids(fresh), [ids[1]]);
  state.down = true;
  const printed = await catchLog(async () => {
    assertEquals(await kids(fresh), [ids[1]], "the previous document while the store is down");
  });
  assertEquals(printed.map((p) => [p.toError, p.line.split(";")[0]]), [[true, "keycell: serving the previous JWKS"]]);
});

Deno.test("JwksPublisher without a key store: an empty set that cannot be changed", async () => {
  const { signer, ids } = fakes();
  const jwks = new JwksPublisher(signer, undefined);
  assertEquals(await jwks.document(), { keys: [] });
  assertEquals(jwks.available, false);
  await assertRejects(jwks.mark(ids[0], true), (err) => err instanceof KeycellError && err.code === "bad_request");
});
