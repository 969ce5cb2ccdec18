/**
 * `_stub_app.ts TREE PORT TOKEN`: the HTTP app of the tree at TREE (`createApp`), accepting the
 * bearer token TOKEN, over a signer that answers at once, served by `Deno.serve` on
 * 127.0.0.1:PORT, for bench/http_app.ts; with `bare` as TREE, a handler that reads the body and
 * answers JSON, nothing of keycell's. Prints `ready` once listening; exits on SIGTERM.
 *
 * Only modules both the tree and older trees have are imported (`src/host/app.ts`,
 * `src/host/auth.ts`), so the app of another commit can be served the same way.
 *
 * @module
 */

const [tree, port, token] = Deno.args;
const SIGNATURE = new Uint8Array(72).fill(9);
let fetch: (request: Request) => Response | Promise<Response>;
if (tree === "bare") {
  fetch = async (request) => {
    await request.text();
    return Response.json({ keyId: "", algorithm: "ECDSA_SHA_256", signature: "" });
  };
} else {
  const { createApp } = await import(`${tree}/src/host/app.ts`);
  const { sha256Hex, TokenStore } = await import(`${tree}/src/host/auth.ts`);
  const signer = { mode: "stub", sign: () => Promise.resolve(SIGNATURE), health: () => Promise.resolve() };
  const tokens = TokenStore.fromEntries([{ name: "bench", sha256: sha256Hex(token), keys: "*" }]);
  // The queue `serve` gives one guest; a tree without it ignores the option.
  fetch = createApp({ signer, tokens, queue: { concurrency: 32, maxWaitMs: 5_000 } }).fetch;
}
const server = Deno.serve({ hostname: "127.0.0.1", port: Number(port), onListen: () => console.log("ready") }, fetch);
Deno.addSignalListener("SIGTERM", () => server.shutdown().then(() => Deno.exit(0)));
