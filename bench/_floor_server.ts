/**
 * The floor for the HTTP benchmark: Deno.serve and the same pool of signer workers as `keycell
 * serve`, with nothing of keycell's between them (no Hono, zod, tokens, metrics or sealed
 * store). It answers any POST carrying a sign body with the signature; what `keycell serve`
 * costs above this is keycell's own, and what this costs above the guest called directly is
 * the runtime's HTTP and the crossing to a worker.
 *
 * Environment: KEYCELL_KEYS_DIR (key files), KEYCELL_LISTEN (host:port),
 * KEYCELL_SIGNER_INSTANCES. Prints `keycell ready on URL` like `keycell serve`.
 *
 * @module
 */

import { ProtocolSignerClient } from "../src/core/signer_client.ts";
import { PoolTransport } from "../src/deno/pool.ts";
import { WASM } from "../test/_wasm.ts";

const [hostname, port] = (Deno.env.get("KEYCELL_LISTEN") ?? "127.0.0.1:0").split(":");
const instances = Number(Deno.env.get("KEYCELL_SIGNER_INSTANCES") || navigator.hardwareConcurrency);
const signer = new ProtocolSignerClient(await PoolTransport.start({ wasm: WASM, keysDir: Deno.env.get("KEYCELL_KEYS_DIR") }, { instances }));

Deno.serve({
  hostname,
  port: Number(port),
  onListen: (addr) => console.log(`keycell ready on http://${addr.hostname}:${addr.port} (floor, ${instances} workers)`),
}, async (req) => {
  const body = await req.json();
  const signature = await signer.sign({
    // The path is /v1/keys/{id}/sign.
    keyId: new URL(req.url).pathname.split("/")[3],
    algorithm: body.algorithm,
    messageType: body.messageType,
    message: Uint8Array.fromBase64(body.message),
  });
  return Response.json({ signature: signature.toBase64() });
});
