import { assertEquals } from "../../../test/_assert.ts";
import { createApp } from "../app.ts";
import { TokenStore } from "../auth.ts";
import type { SignerClient } from "../../core/signer_client.ts";

Deno.test("/healthz answers 503 signer_unavailable when the signer does not answer, and asks a stuck signer once", async () => {
  let asked = 0;
  // A guest busy with one long generation: its health answer never comes.
  const stuck = { mode: "stub", health: () => (asked++, new Promise<void>(() => {})) } as unknown as SignerClient;
  const app = createApp({ signer: stuck, tokens: TokenStore.fromEntries([]) });
  const answers = await Promise.all([app.request("/healthz"), app.request("/healthz")]);
  for (const res of answers) {
    const body = await res.json();
    assertEquals([res.status, body.error.code], [503, "signer_unavailable"]);
  }
  assertEquals(asked, 1, "probes share the check under way");
});

Deno.test("/healthz answers 200 with the signer's mode when it answers", async () => {
  const signer = { mode: "stub", health: () => Promise.resolve() } as unknown as SignerClient;
  const res = await createApp({ signer, tokens: TokenStore.fromEntries([]) }).request("/healthz");
  assertEquals([res.status, await res.json()], [200, { status: "ok", signer: "stub" }]);
});
