/**
 * `keycell keyserver`: a separate OS process that hosts the signer compartment and serves it over
 * the Keyless SSL protocol, on a Unix socket (mode 0600, also carrying keycell's own protocol for
 * the `process` signer mode) and on TCP (optionally TLS with client certificates).
 *
 * @module
 */

import { Compartment } from "../guest/compartment.ts";
import { loadConfig, loadKeyserverConfig } from "../host/config.ts";
import { KeylessServer } from "./server.ts";

/** Runs the key server until SIGINT or SIGTERM (or stdin closing, when started by a host). */
export async function runKeyserver(): Promise<void> {
  const env = (name: string) => Deno.env.get(name);
  const config = loadConfig(env);
  const ks = loadKeyserverConfig(env);
  Deno.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  Deno.mkdirSync(config.keysDir, { recursive: true, mode: 0o700 });

  const compartment = Compartment.create({ wasm: Deno.readFileSync(config.wasmPath), keysDir: config.keysDir });
  for (const f of compartment.keyFiles) {
    console.log(f.error ? `keycell keyserver: skipped ${f.file}: ${f.error}` : `keycell keyserver: loaded ${f.file} as ${f.keySpec} ${f.id}`);
  }
  const server = new KeylessServer({
    signer: (request) => compartment.handle(request),
    keyFiles: () => compartment.keyFiles,
    maxPendingPerConnection: ks.maxPendingPerConnection,
  });
  await server.listenUnix(config.keyserverSocket);
  const where = [`unix:${config.keyserverSocket}`];
  if (ks.tcp !== undefined) {
    if (ks.tlsCert !== undefined && ks.tlsKey !== undefined) {
      const addr = await server.listenTls({
        ...ks.tcp,
        cert: Deno.readTextFileSync(ks.tlsCert),
        key: Deno.readTextFileSync(ks.tlsKey),
        clientCa: ks.clientCa === undefined ? undefined : Deno.readTextFileSync(ks.clientCa),
      });
      where.push(`tls:${hostPort(addr.hostname, addr.port)}${ks.clientCa ? " (client certificates required)" : ""}`);
    } else {
      const addr = server.listenTcp(ks.tcp);
      where.push(`tcp:${hostPort(addr.hostname, addr.port)}`);
    }
  }

  let stopping: Promise<void> | undefined;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const stop = () => stopping ??= server.close().then(stopped);
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  if (ks.exitWithParent) {
    (async () => {
      const buffer = new Uint8Array(64);
      try {
        while ((await Deno.stdin.read(buffer)) !== null) { /* nothing is sent; wait for the end */ }
      } catch {
        // stdin closed
      }
      stop();
    })();
  }
  console.log(`keycell keyserver ready on ${where.join(", ")} (keys: ${compartment.keyFiles.filter((f) => f.id).length})`);
  await done;
  // A pending read of stdin would keep the process alive.
  Deno.exit(0);
}

function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}
