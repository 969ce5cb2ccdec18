import { assert, assertEquals } from "../../test/_assert.ts";
import { sha256Hex } from "../host/auth.ts";
import { loadTokens } from "./tokens.ts";
import { tempDir } from "../../test/_temp.ts";

Deno.test("with no token configured, an admin token is created once, mode 0600", async () => {
  const dir = await tempDir();
  const first = loadTokens(dir);
  assertEquals(first.createdAdminToken, `${dir}/admin.token`);
  assertEquals((await Deno.stat(`${dir}/admin.token`)).mode! & 0o777, 0o600);
  const token = (await Deno.readTextFile(`${dir}/admin.token`)).trim();
  assertEquals((first.store.authenticate(`Bearer ${token}`)).keys, "*");
  const second = loadTokens(dir);
  assertEquals(second.createdAdminToken, undefined, "the existing token is kept");
  assertEquals((second.store.authenticate(`Bearer ${token}`)).name, "admin");
});

Deno.test("tokens.json configures scoped tokens and no admin token is made", async () => {
  const dir = await tempDir();
  const id = "c".repeat(64);
  await Deno.writeTextFile(`${dir}/tokens.json`, JSON.stringify({ tokens: [{ name: "edge", sha256: sha256Hex("t0k"), keys: [id] }] }));
  const { store, createdAdminToken } = loadTokens(dir);
  assertEquals(createdAdminToken, undefined);
  assertEquals(store.size, 1);
  const grant = store.authenticate("Bearer t0k");
  assert(grant.keys !== "*" && grant.keys.has(id));
});
