import { assert, assertEquals } from "../../../test/_assert.ts";
import { createApp } from "../app.ts";
import { sha256Hex, TokenStore } from "../auth.ts";
import type { SignerClient } from "../../core/signer_client.ts";
import type { SealedKeys } from "../../core/sealed_keys.ts";
import { SqliteKeyStore } from "../../deno/store/sqlite.ts";
import type { StoredKey } from "../../core/key_store.ts";
import { tempDir } from "../../../test/_temp.ts";

function stored(i: number): StoredKey {
  return { id: i.toString(16).padStart(64, "0"), keySpec: "ECC_NIST_P256", publicKey: new Uint8Array([0x30, i]), sealed: new Uint8Array([i]) };
}

Deno.test("a scoped token's pages and cursors name only its own keys", async () => {
  const dir = await tempDir("keycell-list-");
  const store = SqliteKeyStore.open(`${dir}/keys.db`);
  try {
    const all = [1, 2, 3, 4, 5, 6, 7].map(stored);
    await store.putMany(all);
    const scope = [stored(3).id, stored(6).id, stored(9).id];
    const tokens = TokenStore.fromEntries([
      { name: "admin", sha256: sha256Hex("admin"), keys: "*" },
      { name: "scoped", sha256: sha256Hex("scoped"), keys: scope },
      { name: "none", sha256: sha256Hex("none"), keys: [stored(9).id] },
    ]);
    const keys = { listPage: (options) => store.list(options) } as SealedKeys;
    const app = createApp({ signer: { mode: "stub" } as unknown as SignerClient, keys, tokens });

    /** Follows the cursors with `limit`; resolves with every page's ids and every body's text. */
    const walk = async (token: string, limit: number) => {
      const pages: string[][] = [];
      const texts: string[] = [];
      let cursor: string | undefined;
      do {
        const res = await app.request(`/v1/keys?limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`, { headers: { Authorization: `Bearer ${token}` } });
        assertEquals(res.status, 200);
        const text = await res.text();
        texts.push(text);
        const body = JSON.parse(text);
        pages.push(body.keys.map((k: { id: string }) => k.id));
        cursor = body.nextCursor;
      } while (cursor !== undefined && pages.length < 20);
      return { pages, text: texts.join("\n") };
    };

    const scoped = await walk("scoped", 1);
    assertEquals(scoped.pages, [[stored(3).id], [stored(6).id]], "one key a page, no empty page, no cursor after the last");
    for (const key of all) {
      if (!scope.includes(key.id)) assert(!scoped.text.includes(key.id), `${key.id} is out of scope yet shown`);
    }
    assertEquals((await walk("none", 1)).pages, [[]], "a token whose keys are gone sees one empty page and no cursor");
    assertEquals((await walk("admin", 3)).pages.flat(), all.map((k) => k.id), "a full-scope token pages through every key");
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
