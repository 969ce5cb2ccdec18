import { assertEquals } from "../../test/_assert.ts";
import { loadConfig } from "./config.ts";

const from = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("defaults: .keycell, 127.0.0.1:8787, worker signer", () => {
  const c = loadConfig(from({}));
  assertEquals([c.dataDir, c.keysDir, c.hostname, c.port, c.signer], [".keycell", ".keycell/keys", "127.0.0.1", 8787, "worker"]);
  assertEquals(c.wasmPath.endsWith("/wasm/signer.wasm"), true);
  assertEquals(c.signerInstances, navigator.hardwareConcurrency, "one guest instance per core");
  assertEquals(loadConfig(from({ KEYCELL_SIGNER_INSTANCES: "1" })).signerInstances, 1);
});

Deno.test("environment overrides, including an IPv6 listen address", () => {
  const c = loadConfig(from({ KEYCELL_DATA_DIR: "/d", KEYCELL_LISTEN: "[::1]:9000", KEYCELL_SIGNER: "inline", KEYCELL_MAX_BODY_BYTES: "100", KEYCELL_AUDIT_LOG: "-" }));
  assertEquals([c.dataDir, c.keysDir, c.hostname, c.port, c.signer, c.maxBodyBytes, c.auditLog], ["/d", "/d/keys", "::1", 9000, "inline", 100, "-"]);
  assertEquals(loadConfig(from({})).auditLog, undefined, "no audit log unless asked for");
});

Deno.test("unusable values name their variable", () => {
  for (const [name, value] of [["KEYCELL_LISTEN", "8787"], ["KEYCELL_LISTEN", "h:99999"], ["KEYCELL_SIGNER", "magic"], ["KEYCELL_MAX_IN_FLIGHT", "-1"], ["KEYCELL_SIGNER_INSTANCES", "0"]]) {
    let message = "";
    try {
      loadConfig(from({ [name]: value }));
    } catch (err) {
      message = (err as Error).message;
    }
    assertEquals(message.startsWith(name), true, `${name}=${value}: ${message}`);
  }
});

Deno.test("key storage: sealed SQLite by default, the key directory only when named, PostgreSQL with its URL", () => {
  const c = loadConfig(from({}));
  assertEquals([c.store, c.importKeysDir, c.keyCacheBytes, c.keyRecheckMs], ["sqlite", undefined, 64 * 1024 * 1024, 5000]);
  assertEquals(loadConfig(from({ KEYCELL_KEY_RECHECK_MS: "0" })).keyRecheckMs, 0);
  const pg = loadConfig(from({ KEYCELL_STORE: "postgres", KEYCELL_POSTGRES_URL: "postgres://u@127.0.0.1/k", KEYCELL_KEYS_DIR: "/k", KEYCELL_KEY_CACHE_BYTES: "4096" }));
  assertEquals([pg.store, pg.postgresUrl, pg.importKeysDir, pg.keyCacheBytes], ["postgres", "postgres://u@127.0.0.1/k", "/k", 4096]);
  const unusable: Record<string, string>[] = [{ KEYCELL_STORE: "redis" }, { KEYCELL_STORE: "postgres" }, { KEYCELL_KEY_CACHE_BYTES: "0" }, { KEYCELL_KEY_RECHECK_MS: "-1" }];
  for (const vars of unusable) {
    let message = "";
    try {
      loadConfig(from(vars));
    } catch (err) {
      message = (err as Error).message;
    }
    assertEquals(message.startsWith(Object.keys(vars)[0]), true, message);
  }
});
