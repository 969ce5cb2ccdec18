/**
 * keycell on Deno Deploy: a `deno serve` entry (`export default { fetch }`). The same Hono app as
 * `serve`, its sealed keys on Deno KV, the guest in a Worker (inline where the runtime has no
 * Workers), the master key from the secret environment variable KEYCELL_MASTER_KEY and the tokens
 * from KEYCELL_TOKENS. A start that cannot serve prints one line and exits 1. README.md, "Deno
 * Deploy", says how to run and deploy it.
 *
 * @module
 */

import { CannotStart, startDeploy } from "./start.ts";
import { getLog } from "../core/log.ts";
import { loadLogSettings } from "../deno/config.ts";
import { configureLogging } from "../deno/log.ts";

const log = getLog();
configureLogging({ level: "info", format: "text" });
try {
  configureLogging(loadLogSettings((name) => Deno.env.get(name)));
} catch (err) {
  log.error(`cannot start: ${(err as Error).message}`);
  Deno.exit(1);
}

const wasm = await Deno.readFile(new URL("../../wasm/signer.wasm", import.meta.url));
const started = await startDeploy(Deno.env, wasm).catch((err) => {
  log.error(`cannot start: ${err instanceof CannotStart ? err.message : (err as Error).message}`);
  Deno.exit(1);
});

// Where the runtime has signals (not on Deploy, which stops isolates itself), SIGTERM and SIGINT
// stop the guest and close the store before the process exits.
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  try {
    Deno.addSignalListener(signal, () => started.close().finally(() => Deno.exit(0)));
  } catch {
    // no signals here
  }
}

export default {
  fetch: (request) => started.app.fetch(request),
  onListen(addr: Deno.Addr) {
    const where = "hostname" in addr ? `http://${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}` : addr.transport;
    log.info(`ready on ${where} (signer: ${started.signer}, store: ${started.store.kind})`, { url: where, signer: started.signer, store: started.store.kind });
  },
} satisfies Deno.ServeDefaultExport;
