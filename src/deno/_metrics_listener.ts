/**
 * The key server's metrics listener: `GET /metrics` on a listener of its own, so the Keyless
 * listeners carry Keyless alone. Private to the key server (`keyserver.ts`, `keyserver_processes.ts`).
 *
 * @module
 */

import { type ResilientServer, serveResiliently } from "./http_listener.ts";

/** `host:port`, the host in brackets when it is an IPv6 address. */
export function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/**
 * Serves `GET /metrics` (and HEAD) at `address` with what `render` gives, in `contentType`; 404
 * for any other path, 405 for any other method. Resolves once it listens.
 */
export async function serveMetrics(
  address: { hostname: string; port: number },
  render: () => string | Promise<string>,
  contentType: string,
): Promise<{ server: ResilientServer; addr: Deno.NetAddr }> {
  let listening!: (addr: Deno.NetAddr) => void;
  const addr = new Promise<Deno.NetAddr>((resolve) => listening = resolve);
  const server = serveResiliently({ ...address, onListen: (a) => listening(a) }, async (request) => {
    if (new URL(request.url).pathname !== "/metrics") return Response.json({ error: { code: "not_found", message: "only /metrics is served here" } }, { status: 404 });
    if (request.method !== "GET" && request.method !== "HEAD") return new Response(null, { status: 405, headers: { Allow: "GET, HEAD" } });
    return new Response(await render(), { headers: { "Content-Type": contentType } });
  });
  return { server, addr: await addr };
}
