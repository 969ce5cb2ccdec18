import { assertEquals, assertThrows } from "../../test/_assert.ts";
import { commandSettings, layered, loadConfig, loadKeyserverConfig, loadLogSettings, parseConfigFile, SETTING_NAMES } from "./config.ts";
import { runKeycell, startKeycell } from "../../test/_command.ts";
import { tempDir } from "../../test/_temp.ts";

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

Deno.test("serve's connections: a cap of 4096, a 10 s header timeout and a 60 s idle timeout unless set", () => {
  const c = loadConfig(from({}));
  assertEquals([c.maxConnections, c.headerTimeoutMs, c.idleTimeoutMs], [4096, 10_000, 60_000]);
  const set = loadConfig(from({ KEYCELL_MAX_CONNECTIONS: "100", KEYCELL_HEADER_TIMEOUT_MS: "2000", KEYCELL_IDLE_TIMEOUT_MS: "5000" }));
  assertEquals([set.maxConnections, set.headerTimeoutMs, set.idleTimeoutMs], [100, 2000, 5000]);
});

Deno.test("unusable values name their variable", () => {
  for (
    const [name, value] of [
      ["KEYCELL_LISTEN", "8787"],
      ["KEYCELL_LISTEN", "h:99999"],
      ["KEYCELL_SIGNER", "magic"],
      ["KEYCELL_MAX_IN_FLIGHT", "-1"],
      ["KEYCELL_SIGNER_INSTANCES", "0"],
      ["KEYCELL_MAX_CONNECTIONS", "0"],
      ["KEYCELL_HEADER_TIMEOUT_MS", "0"],
      ["KEYCELL_IDLE_TIMEOUT_MS", "soon"],
    ]
  ) {
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

Deno.test("config file: its values are read as the variables are, numbers included; the environment wins", () => {
  const file = parseConfigFile(
    JSON.stringify({ KEYCELL_DATA_DIR: "/var/lib/keycell", KEYCELL_LISTEN: "0.0.0.0:9000", KEYCELL_SIGNER_INSTANCES: 3, KEYCELL_KEY_RECHECK_MS: 0, KEYCELL_SIGNER: "inline" }),
    "/etc/keycell.json",
  );
  const fromFile = loadConfig(layered(from({}), file));
  assertEquals(
    [fromFile.dataDir, fromFile.keysDir, fromFile.hostname, fromFile.port, fromFile.signerInstances, fromFile.keyRecheckMs, fromFile.signer],
    ["/var/lib/keycell", "/var/lib/keycell/keys", "0.0.0.0", 9000, 3, 0, "inline"],
  );
  const both = loadConfig(layered(from({ KEYCELL_SIGNER: "worker", KEYCELL_SIGNER_INSTANCES: "1" }), file));
  assertEquals([both.signer, both.signerInstances, both.dataDir], ["worker", 1, "/var/lib/keycell"], "the environment wins, the file fills in");
  const emptyEnv = loadConfig(layered(from({ KEYCELL_SIGNER: "" }), file));
  assertEquals(emptyEnv.signer, "inline", "an empty variable is unset, as without a file");
  const keyserver = loadKeyserverConfig(layered(from({}), parseConfigFile('{"KEYCELL_KEYSERVER_LISTEN": "off", "KEYCELL_KEYSERVER_MAX_PENDING": 8}', "k.json")));
  assertEquals([keyserver.tcp, keyserver.maxPendingPerConnection], [undefined, 8]);
});

Deno.test("log settings: info and text by default; the environment over the file; unusable values name their variable", () => {
  assertEquals(loadLogSettings(() => undefined), { level: "info", format: "text" });
  const file = parseConfigFile('{"KEYCELL_LOG_LEVEL": "error", "KEYCELL_LOG_FORMAT": "json"}', "keycell.json");
  assertEquals(loadLogSettings(layered(() => undefined, file)), { level: "error", format: "json" });
  assertEquals(loadLogSettings(layered(from({ KEYCELL_LOG_LEVEL: "debug" }), file)), { level: "debug", format: "json" });
  assertThrows(() => loadLogSettings(from({ KEYCELL_LOG_FORMAT: "xml" })), /^Error: KEYCELL_LOG_FORMAT must be one of text, json, not "xml"$/);
  assertThrows(() => parseConfigFile('{"KEYCELL_LOG_LEVEL": "warn"}', "k.json"), /^Error: k.json: KEYCELL_LOG_LEVEL must be one of debug, info, warning, error, not "warn"$/);
});

Deno.test("config file: a wrong key or value is one line naming the file and the key", () => {
  const cases: [string, string][] = [
    ['{"KEYCELL_LISTN": "127.0.0.1:1"}', 'keycell.json: unknown setting "KEYCELL_LISTN"'],
    ['{"listen": "127.0.0.1:1"}', 'keycell.json: unknown setting "listen"'],
    ['{"KEYCELL_CONFIG": "other.json"}', 'keycell.json: unknown setting "KEYCELL_CONFIG"'],
    ['{"KEYCELL_LISTEN": "8787"}', 'keycell.json: KEYCELL_LISTEN must be host:port, not "8787"'],
    ['{"KEYCELL_SIGNER": "magic"}', 'keycell.json: KEYCELL_SIGNER must be one of worker, inline, process, not "magic"'],
    ['{"KEYCELL_MAX_IN_FLIGHT": -1}', "keycell.json: KEYCELL_MAX_IN_FLIGHT must be a positive integer, not -1"],
    ['{"KEYCELL_SIGNER_INSTANCES": 1.5}', "keycell.json: KEYCELL_SIGNER_INSTANCES must be a positive integer, not 1.5"],
    ['{"KEYCELL_DRAIN_MS": "soon"}', 'keycell.json: KEYCELL_DRAIN_MS must be a non-negative integer, not "soon"'],
    ['{"KEYCELL_STORE": "redis"}', 'keycell.json: KEYCELL_STORE must be one of sqlite, postgres, not "redis"'],
    ['{"KEYCELL_KEYSERVER_LISTEN": "2407"}', 'keycell.json: KEYCELL_KEYSERVER_LISTEN must be host:port or off, not "2407"'],
    ['{"KEYCELL_FAULT_INJECTION": true}', "keycell.json: KEYCELL_FAULT_INJECTION must be a string or a number, not true"],
    ['{"KEYCELL_DATA_DIR": ["/a"]}', 'keycell.json: KEYCELL_DATA_DIR must be a string or a number, not ["/a"]'],
    ['["KEYCELL_DATA_DIR"]', "keycell.json must hold one JSON object of KEYCELL_* settings"],
    ["KEYCELL_DATA_DIR=/a", "keycell.json is not JSON"],
  ];
  for (const [source, expected] of cases) {
    let message = "";
    try {
      parseConfigFile(source, "keycell.json");
    } catch (err) {
      message = (err as Error).message;
    }
    assertEquals(message.startsWith(expected), true, `${source}: ${message}`);
    assertEquals(message.includes("\n"), false, `one line: ${message}`);
  }
});

Deno.test("config file: named by --config PATH, --config=PATH or KEYCELL_CONFIG; the option is taken out of the arguments", () => {
  const files: Record<string, string> = { "a.json": '{"KEYCELL_SIGNER": "inline"}', "b.json": '{"KEYCELL_SIGNER": "process"}' };
  const read = (path: string) => {
    if (!(path in files)) throw new Error(`No such file or directory (os error 2): readfile '${path}'`);
    return files[path];
  };
  const signer = (args: string[], env: Record<string, string> = {}) => {
    const got = commandSettings(args, from(env), read);
    return [loadConfig(got.settings).signer, got.args, got.configPath];
  };
  assertEquals(signer(["serve"]), ["worker", ["serve"], undefined]);
  assertEquals(signer(["serve", "--config", "a.json"]), ["inline", ["serve"], "a.json"]);
  assertEquals(signer(["--config=b.json", "keys", "list"]), ["process", ["keys", "list"], "b.json"]);
  assertEquals(signer(["serve"], { KEYCELL_CONFIG: "a.json" }), ["inline", ["serve"], "a.json"]);
  assertEquals(signer(["serve", "--config", "b.json"], { KEYCELL_CONFIG: "a.json" }), ["process", ["serve"], "b.json"], "the option wins over the variable");
  assertEquals(signer(["serve", "--config", "a.json"], { KEYCELL_SIGNER: "worker" }), ["worker", ["serve"], "a.json"]);
  for (const [args, expected] of [[["serve", "--config"], "--config needs a file path"], [["serve", "--config", "nope.json"], "cannot read the config file nope.json"]] as const) {
    let message = "";
    try {
      commandSettings(args, from({}), read);
    } catch (err) {
      message = (err as Error).message;
    }
    assertEquals(message.startsWith(expected), true, message);
  }
});

Deno.test("serve --config: a wrong key stops the start with one line and no stack trace; a good file is used, the environment over it", async () => {
  const dir = await tempDir("keycell-config-");
  await Deno.writeTextFile(`${dir}/bad.json`, JSON.stringify({ KEYCELL_DATA_DIR: dir, KEYCELL_SIGNR: "inline" }));
  const bad = await runKeycell("serve", { args: ["--config", `${dir}/bad.json`] });
  assertEquals(bad.code, 1, bad.output);
  assertEquals(bad.stdout, "");
  assertEquals(bad.stderr.trimEnd().split("\n"), [`keycell: ${dir}/bad.json: unknown setting "KEYCELL_SIGNR" (known: ${SETTING_NAMES.join(", ")})`]);
  await Deno.writeTextFile(`${dir}/value.json`, JSON.stringify({ KEYCELL_MAX_IN_FLIGHT: 0 }));
  const value = await runKeycell("serve", { args: [], env: { KEYCELL_CONFIG: `${dir}/value.json` } });
  assertEquals([value.code, value.stderr], [1, `keycell: ${dir}/value.json: KEYCELL_MAX_IN_FLIGHT must be a positive integer, not 0\n`]);

  // The file names the signer, the data directory and a port the environment overrides.
  await Deno.writeTextFile(`${dir}/keycell.json`, JSON.stringify({ KEYCELL_DATA_DIR: `${dir}/data`, KEYCELL_SIGNER: "process", KEYCELL_LISTEN: "127.0.0.1:1" }));
  const server = await startKeycell("serve", {
    args: ["--config", `${dir}/keycell.json`],
    env: { KEYCELL_LISTEN: "127.0.0.1:0" },
    ready: /keycell ready on (http:\/\/\S+) \(signer: (\w+)/,
  });
  try {
    assertEquals(server.ready[2], "process", "the key server child started with the same file");
    const ready = await fetch(`${server.ready[1]}/readyz`);
    assertEquals([ready.status, (await ready.json()).signer], [200, "process"]);
    assertEquals((await Deno.stat(`${dir}/data/admin.token`)).isFile, true, "the data directory is the file's");
  } finally {
    assertEquals(await server.stop(), 0);
  }
});

Deno.test("KEYCELL_ENGINE: v8 by default, or wasmtime; wasmtime does not go with the inline signer", () => {
  assertEquals(loadConfig(from({})).engine, "v8");
  assertEquals(loadConfig(from({ KEYCELL_ENGINE: "wasmtime", KEYCELL_SIGNER: "process" })).engine, "wasmtime");
  assertThrows(() => loadConfig(from({ KEYCELL_ENGINE: "wasmer" })), /^Error: KEYCELL_ENGINE must be one of v8, wasmtime, not "wasmer"$/);
  assertThrows(() => loadConfig(from({ KEYCELL_ENGINE: "wasmtime", KEYCELL_SIGNER: "inline" })), /KEYCELL_SIGNER=inline/);
});
