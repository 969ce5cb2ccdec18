import { assertEquals } from "../../test/_assert.ts";
import { loadConfig, loadKeyserverConfig } from "./config.ts";

const from = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("keyserver defaults: <dataDir>/keyserver.sock, TCP 127.0.0.1:2407 without TLS, 1024 pending", () => {
  assertEquals(loadConfig(from({ KEYCELL_DATA_DIR: "/d" })).keyserverSocket, "/d/keyserver.sock");
  assertEquals(loadConfig(from({ KEYCELL_SIGNER: "process", KEYCELL_KEYSERVER_SOCKET: "/run/ks.sock" })).keyserverSocket, "/run/ks.sock");
  const ks = loadKeyserverConfig(from({}));
  assertEquals([ks.tcp, ks.tlsCert, ks.clientCa, ks.maxPendingPerConnection], [{ hostname: "127.0.0.1", port: 2407 }, undefined, undefined, 1024]);
  assertEquals(loadKeyserverConfig(from({ KEYCELL_KEYSERVER_LISTEN: "off" })).tcp, undefined);
  assertEquals([ks.auditLog, loadKeyserverConfig(from({ KEYCELL_KEYSERVER_AUDIT_LOG: "/var/log/ks.log" })).auditLog], [undefined, "/var/log/ks.log"]);
  assertEquals(loadKeyserverConfig(from({ KEYCELL_KEYSERVER_LISTEN: "[::1]:9" })).tcp, { hostname: "::1", port: 9 });
});

Deno.test("keyserver: TLS needs both files; a non-loopback listener needs client certificates", () => {
  const tls = { KEYCELL_KEYSERVER_TLS_CERT: "c.pem", KEYCELL_KEYSERVER_TLS_KEY: "k.pem" };
  const ok = loadKeyserverConfig(from({ ...tls, KEYCELL_KEYSERVER_CLIENT_CA: "ca.pem", KEYCELL_KEYSERVER_LISTEN: "0.0.0.0:2407" }));
  assertEquals([ok.tcp?.hostname, ok.tlsCert, ok.tlsKey, ok.clientCa], ["0.0.0.0", "c.pem", "k.pem", "ca.pem"]);
  for (
    const [vars, name] of [
      [{ KEYCELL_KEYSERVER_TLS_CERT: "c.pem" }, "KEYCELL_KEYSERVER_TLS_CERT"],
      [{ KEYCELL_KEYSERVER_CLIENT_CA: "ca.pem" }, "KEYCELL_KEYSERVER_CLIENT_CA"],
      [{ KEYCELL_KEYSERVER_LISTEN: "0.0.0.0:2407" }, "KEYCELL_KEYSERVER_LISTEN"],
      [{ ...tls, KEYCELL_KEYSERVER_LISTEN: "10.0.0.1:2407" }, "KEYCELL_KEYSERVER_LISTEN"],
      [{ KEYCELL_KEYSERVER_LISTEN: "2407" }, "KEYCELL_KEYSERVER_LISTEN"],
      [{ KEYCELL_KEYSERVER_MAX_PENDING: "0" }, "KEYCELL_KEYSERVER_MAX_PENDING"],
    ] as [Record<string, string>, string][]
  ) {
    let message = "";
    try {
      loadKeyserverConfig(from(vars));
    } catch (err) {
      message = (err as Error).message;
    }
    assertEquals(message.startsWith(name), true, `${JSON.stringify(vars)}: ${message}`);
  }
});
