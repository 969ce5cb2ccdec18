import { assert, assertEquals } from "./_assert.ts";
import { makeKeys, openssl } from "./_fixtures.ts";
import { opensslCheck } from "./_verify.ts";
import { checkNamedKeys, checkServeAcrossRestart } from "./_http_conformance.ts";
import { apiClient, signEveryWay } from "./_server.ts";
import { runKeycell, startKeycell, startServer } from "./_command.ts";
import { decodeResponse, encodeMessage, FrameReader, Opcode } from "../src/keyless/codec.ts";
import { keylessNames } from "../src/core/key_names.ts";
import { sha256Hex } from "../src/host/auth.ts";
import { tempDir } from "./_temp.ts";

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

for (const signer of ["worker", "inline", "process"]) {
  Deno.test(`serve (${signer}): first run makes an admin token, loads every key form, signs, stops cleanly`, async () => {
    const dataDir = await tempDir("keycell-serve-");
    const [rsa, p384] = await makeKeys(dataDir, ["RSA_2048", "ECC_NIST_P384"]);
    // The same keys again in the other encodings the guest reads: PKCS#1 PEM, SEC1 PEM, PKCS#8 DER.
    await Deno.mkdir(`${dataDir}/other`);
    await openssl(["rsa", "-in", rsa.path, "-traditional", "-out", `${dataDir}/other/rsa-pkcs1.pem`]);
    await openssl(["ec", "-in", p384.path, "-out", `${dataDir}/other/ec-sec1.pem`]);
    await openssl(["pkey", "-in", rsa.path, "-outform", "DER", "-out", `${dataDir}/other/rsa-pkcs8.der`]);
    await Deno.writeTextFile(`${dataDir}/other/notes.txt`, "not a key\n");

    for (const keysDir of [`${dataDir}/keys`, `${dataDir}/other`]) {
      const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: signer, KEYCELL_KEYS_DIR: keysDir } });
      try {
        const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
        assertEquals((await Deno.stat(`${dataDir}/admin.token`)).mode! & 0o777, 0o600);
        const auth = { Authorization: `Bearer ${token}` };
        assertEquals((await (await fetch(`${server.url}/healthz`)).json()).signer, signer);

        const listed = (await (await fetch(`${server.url}/v1/keys`, { headers: auth })).json()).keys.map((k: { id: string }) => k.id);
        assertEquals(listed.sort(), [rsa.id, p384.id].sort(), `${keysDir}: one key per distinct key, whatever its encoding`);
        if (keysDir.endsWith("other")) {
          assert(server.lines.some((l) => l.includes("skipped notes.txt")), "a file that is no key is reported");
        }

        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("hello")));
        for (const [key, algorithm] of [[rsa, "RSASSA_PKCS1_V1_5_SHA_256"], [p384, "ECDSA_SHA_256"]] as const) {
          const res = await fetch(`${server.url}/v1/keys/${key.id}/sign`, {
            method: "POST",
            headers: { ...auth, "Content-Type": "application/json" },
            body: JSON.stringify({ algorithm, messageType: "DIGEST", message: digest.toBase64() }),
          });
          assertEquals(res.status, 200);
          const signature = Uint8Array.fromBase64((await res.json()).signature);
          assertEquals(await opensslCheck(key, algorithm, digest, signature), undefined);
        }
      } finally {
        assertEquals(await server.stop(), 0, "SIGTERM shuts down cleanly");
      }
      assert(server.lines.some((l) => l.includes("created an admin token")) === (keysDir.endsWith("/keys")), "token created on the first run only");
    }
  });
}

Deno.test("serve (process): keys generated over HTTP live in the sealed store and survive a restart; the audit log has every request", async () => {
  const dataDir = await tempDir("keycell-serve-process-");
  const env = { KEYCELL_SIGNER: "process", KEYCELL_AUDIT_LOG: `${dataDir}/audit.log` };
  let server = await startServer({ dataDir, env });
  let id: string;
  try {
    const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
    const created = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
    assertEquals(created.status, 201);
    id = (await created.json()).id;
    // Rotation: the file is moved away, and SIGHUP makes serve open a new one at the same path.
    await Deno.rename(`${dataDir}/audit.log`, `${dataDir}/audit.log.1`);
    Deno.kill(server.pid, "SIGHUP");
    for (let i = 0; i < 100 && !(await exists(`${dataDir}/audit.log`)); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    assertEquals((await api("GET", `/v1/keys/${id}`)).status, 200);
  } finally {
    assertEquals(await server.stop(), 0);
  }
  assert((await Deno.stat(`${dataDir}/master.key`)).isFile, "the key server made the master key in the data directory");
  server = await startServer({ dataDir, env });
  try {
    const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
    const listed = (await (await api("GET", "/v1/keys")).json()).keys.map((k: { id: string }) => k.id);
    assertEquals(listed, [id], "the key is listed after the restart");
    await signEveryWay(api, { id, keySpec: "ECC_NIST_P256" });
    await checkNamedKeys(api);
    assertEquals((await api("DELETE", `/v1/keys/${id}?immediately=true`)).status, 204);
    assertEquals((await api("GET", `/v1/keys/${id}`)).status, 404);
  } finally {
    assertEquals(await server.stop(), 0);
  }
  const read = async (path: string) => (await Deno.readTextFile(path)).trim().split("\n").map((line) => JSON.parse(line));
  const rotated = await read(`${dataDir}/audit.log.1`);
  assertEquals(rotated.length, 1, "the rotated file holds what came before SIGHUP");
  assertEquals(rotated[0], { ...rotated[0], remote: "127.0.0.1", token: "admin", method: "POST", route: "/v1/keys", status: 201, keyId: id, keySpec: "ECC_NIST_P256" });
  // Both runs appended to the new file, and the last lines were written on SIGTERM.
  const records = await read(`${dataDir}/audit.log`);
  assertEquals(records[0], { ...records[0], method: "GET", route: "/v1/keys/:id", status: 200, keyId: id });
  assertEquals(records.at(-2), { ...records.at(-2), method: "DELETE", status: 204, keyId: id });
  assertEquals(records.at(-1), { ...records.at(-1), method: "GET", route: "/v1/keys/:id", status: 404, error: "key_not_found", keyId: id });
  assert(records.filter((r) => r.route === "/v1/keys/:id/sign" && r.status === 200).length > 0, "signatures are recorded");
});

Deno.test("serve (worker): the HTTP checks workerd and Deno Deploy pass, then after a restart with a scoped token", async () => {
  await checkServeAcrossRestart("keycell-serve-conformance-", { KEYCELL_SIGNER: "worker", KEYCELL_SIGNER_INSTANCES: "2" }, false);
});

Deno.test("serve: a request body that stops arriving is answered 408 request_timeout after KEYCELL_BODY_TIMEOUT_MS", async () => {
  const dataDir = await tempDir("keycell-body-timeout-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline", KEYCELL_BODY_TIMEOUT_MS: "300" } });
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const { hostname, port } = new URL(server.url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  try {
    const head = `POST /v1/keys HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`;
    await conn.write(new TextEncoder().encode(`${head}{"keySpec":`));
    const buffer = new Uint8Array(4096);
    const n = await conn.read(buffer);
    const answer = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
    assert(answer.startsWith("HTTP/1.1 408"), answer);
    assert(answer.includes('"code":"request_timeout"'), answer);
    assert(/^connection: close$/im.test(answer), answer);
    assert(await closedByServer(conn), "the connection, its body unread, is closed after the answer");
  } finally {
    conn.close();
    assertEquals(await server.stop(), 0);
  }
});

Deno.test("serve: an audit log that cannot be opened stops the start with a clear message", async () => {
  const dataDir = await tempDir("keycell-serve-audit-");
  try {
    const output = await runKeycell("serve", {
      env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_SIGNER: "inline", KEYCELL_LISTEN: "127.0.0.1:0", KEYCELL_AUDIT_LOG: `${dataDir}/missing/audit.log` },
    });
    assertEquals(output.code, 1, output.output);
    const stderr = output.stderr;
    assert(stderr.includes(`keycell: cannot start: cannot open the audit log ${dataDir}/missing/audit.log`), stderr);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("serve: KEYCELL_LOG_FORMAT=json writes every line as a JSON object with its level, the ready line and the key server's included", async () => {
  const dataDir = await tempDir("keycell-serve-json-");
  // The file asks for errors only; the environment, which wins, for info.
  await Deno.writeTextFile(`${dataDir}/keycell.json`, JSON.stringify({ KEYCELL_LOG_FORMAT: "json", KEYCELL_LOG_LEVEL: "error" }));
  const server = await startKeycell("serve", {
    args: ["--config", `${dataDir}/keycell.json`],
    env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_LISTEN: "127.0.0.1:0", KEYCELL_SIGNER: "process", KEYCELL_LOG_LEVEL: "info" },
    ready: /"message":"ready on (http:\/\/[^ "]+)/,
  });
  let records: { time: string; level: string; category: string; message: string; fields: Record<string, unknown> }[];
  try {
    assertEquals((await fetch(`${server.ready[1]}/healthz`)).status, 200);
  } finally {
    assertEquals(await server.stop(), 0);
    records = server.lines.map((line) => JSON.parse(line));
  }
  const ready = records.find((r) => r.message.startsWith("ready on http://"))!;
  assertEquals([ready.level, ready.category, ready.fields.url, ready.fields.signer], ["info", "keycell", server.ready[1], "process"]);
  assert(!Number.isNaN(Date.parse(ready.time)), ready.time);
  const made = (category: string) => records.some((r) => r.category === category && r.message.startsWith("created the master key"));
  assert(made("keycell.keyserver"), "the key server's records are passed on as JSON");
  assert(records.some((r) => r.message.startsWith("no token was configured; created an admin token")));
  assert(!server.lines.some((l) => l.includes(`"level":"debug"`)), "no debug records at info");
});

Deno.test("serve: KEYCELL_LOG_LEVEL=warning leaves out the info lines, keeps the errors", async () => {
  const dataDir = await tempDir("keycell-serve-level-");
  const env = { KEYCELL_DATA_DIR: dataDir, KEYCELL_SIGNER: "inline", KEYCELL_LISTEN: "127.0.0.1:0", KEYCELL_AUDIT_LOG: `${dataDir}/missing/audit.log` };
  const quiet = await runKeycell("serve", { env: { ...env, KEYCELL_LOG_LEVEL: "warning" } });
  assertEquals([quiet.code, quiet.stdout, quiet.stderr.trimEnd().split("\n").length], [1, "", 1], quiet.output);
  assert(quiet.stderr.startsWith("keycell: cannot start: cannot open the audit log"), quiet.stderr);
  await Deno.remove(`${dataDir}/admin.token`);
  const told = await runKeycell("serve", { env: { ...env, KEYCELL_LOG_LEVEL: "info" } });
  assert(told.stdout.startsWith("keycell: no token was configured; created an admin token"), told.output);
  const bad = await runKeycell("serve", { env: { ...env, KEYCELL_LOG_LEVEL: "verbose" } });
  assertEquals([bad.code, bad.stderr], [1, `keycell: KEYCELL_LOG_LEVEL must be one of debug, info, warning, error, not "verbose"\n`]);
});

Deno.test("serve: SIGHUP reads tokens.json again; a broken one keeps the tokens in force", async () => {
  const dataDir = await tempDir("keycell-serve-tokens-");
  const writeTokens = (names: string[]) =>
    Deno.writeTextFile(`${dataDir}/tokens.json`, JSON.stringify({ tokens: names.map((name) => ({ name, sha256: sha256Hex(`${name}-secret`), keys: "*" })) }));
  await writeTokens(["first"]);
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
  try {
    const status = async (name: string) => {
      const res = await fetch(`${server.url}/v1/keys`, { headers: { Authorization: `Bearer ${name}-secret` } });
      await res.body?.cancel();
      return res.status;
    };
    const reload = async (expected: RegExp) => {
      const seen = server.lines.length;
      Deno.kill(server.pid, "SIGHUP");
      for (let i = 0; i < 100 && !server.lines.slice(seen).some((l) => expected.test(l)); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      assert(server.lines.slice(seen).some((l) => expected.test(l)), server.lines.slice(seen).join("\n"));
    };
    assertEquals([await status("first"), await status("second")], [200, 401]);
    await writeTokens(["second"]);
    await reload(/reloaded the tokens \(1\)/);
    assertEquals([await status("first"), await status("second")], [401, 200]);
    await Deno.writeTextFile(`${dataDir}/tokens.json`, "{not json");
    await reload(/kept the tokens in force; cannot reload them: .*tokens.json: not JSON/);
    assertEquals(await status("second"), 200);
  } finally {
    assertEquals(await server.stop(), 0);
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("serve (process): an HTTP client and a Keyless client pipelining at full speed both keep getting answers", async () => {
  const dataDir = await tempDir("keycell-serve-fair-");
  const [key] = await makeKeys(dataDir, ["ECC_NIST_P256"]);
  // One key server, shared: Keyless clients on TCP, and `serve` (the same data directory, so the
  // same socket) over its one private connection.
  const keyserver = await startKeycell("keyserver", {
    env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_KEYS_DIR: `${dataDir}/keys`, KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0" },
    ready: /ready on .*tcp:127\.0\.0\.1:(\d+)/,
  });
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "process" } });
  const flood = await Deno.connect({ hostname: "127.0.0.1", port: Number(keyserver.ready[1]) });
  // The flood keeps this many requests in flight; a server that served connections first come,
  // first served would make every HTTP request wait behind about as many.
  const window = 1000;
  let sent = 0;
  let answered = 0;
  let signed = 0;
  let flooding = true;
  try {
    const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
    const ski = keylessNames(key.spki)!.ski;
    const frame = (id: number) => encodeMessage({ id, opcode: Opcode.ECDSA_SIGN_SHA256, payload: new Uint8Array(32).fill(id & 0xff), ski });
    let wake: (() => void) | undefined;
    const writing = (async () => {
      while (flooding) {
        if (sent - answered >= window) {
          await new Promise<void>((resolve) => (wake = resolve));
          continue;
        }
        const batch = Array.from({ length: Math.min(100, window - (sent - answered)) }, () => frame(++sent));
        const bytes = new Uint8Array(batch.reduce((n, f) => n + f.length, 0));
        batch.reduce((at, f) => (bytes.set(f, at), at + f.length), 0);
        for (let at = 0; at < bytes.length;) at += await flood.write(bytes.subarray(at));
      }
    })();
    const reading = (async () => {
      const reader = new FrameReader();
      const buffer = new Uint8Array(64 * 1024);
      for (let n = await flood.read(buffer); n !== null; n = flooding ? await flood.read(buffer) : null) {
        reader.push(buffer.subarray(0, n));
        for (let f = reader.next(); f !== undefined; f = reader.next()) {
          answered++;
          if (f.kind === "message" && decodeResponse(f.message).kind === "ok") signed++;
        }
        const w = wake;
        wake = undefined;
        w?.();
      }
    })().catch(() => {});
    while (signed < window) await new Promise((resolve) => setTimeout(resolve, 10)); // the flood is under way

    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("fair")));
    const during: number[] = [];
    for (let i = 0; i < 20; i++) {
      const before = answered;
      const res = await api("POST", `/v1/keys/${key.id}/sign`, { algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: digest.toBase64() });
      assertEquals(res.status, 200, `HTTP signature ${i} while the Keyless client floods`);
      await res.body?.cancel();
      during.push(answered - before);
    }
    const signedBefore = signed;
    while (signed < signedBefore + window) await new Promise((resolve) => setTimeout(resolve, 10));
    assert(during.reduce((n, d) => n + d, 0) > 0, "the Keyless client got answers while HTTP requests were served");
    const median = during.toSorted((a, b) => a - b)[during.length >> 1];
    assert(median < window / 2, `each HTTP request took its turn: Keyless answers while one was served ${JSON.stringify(during)}`);
    flooding = false;
    wake?.();
    flood.close();
    await Promise.all([writing.catch(() => {}), reading]);
  } finally {
    flooding = false;
    try {
      flood.close();
    } catch {
      // closed above
    }
    assertEquals(await server.stop(), 0);
    assertEquals(await keyserver.stop(), 0);
  }
});

/** Sends one HTTP/1.1 request on `conn` and reads its whole answer (`closed` if the server closed the connection instead). */
async function exchange(conn: Deno.Conn, request: string): Promise<string> {
  await conn.write(new TextEncoder().encode(request)).catch(() => {});
  const buffer = new Uint8Array(16 * 1024);
  let received = "";
  for (;;) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) return received === "" ? "closed" : received;
    received += new TextDecoder().decode(buffer.subarray(0, n));
    const end = received.indexOf("\r\n\r\n");
    const length = Number(/^content-length: *(\d+)/im.exec(received)?.[1] ?? 0);
    if (end >= 0 && received.length >= end + 4 + length) return received;
  }
}

/** Reads `conn` until the server closes it: true once it has, whatever arrived before. */
async function closedByServer(conn: Deno.Conn): Promise<boolean> {
  const buffer = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) return true;
  }
}

Deno.test("serve: past KEYCELL_MAX_CONNECTIONS a new connection is closed at once, while an open one still signs", async () => {
  const dataDir = await tempDir("keycell-max-connections-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline", KEYCELL_MAX_CONNECTIONS: "2" } });
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const { hostname, port } = new URL(server.url);
  const connect = () => Deno.connect({ hostname, port: Number(port) });
  const post = (path: string, body: unknown) =>
    `POST ${path} HTTP/1.1\r\nHost: keycell\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${JSON.stringify(body).length}\r\n\r\n${JSON.stringify(body)}`;
  const healthz = "GET /healthz HTTP/1.1\r\nHost: keycell\r\n\r\n";
  const signer = await connect();
  const other = await connect();
  try {
    const created = await exchange(signer, post("/v1/keys", { keySpec: "ECC_NIST_P256" }));
    assert(created.startsWith("HTTP/1.1 201"), created);
    const id = JSON.parse(created.slice(created.indexOf("\r\n\r\n") + 4)).id;
    const sign = post(`/v1/keys/${id}/sign`, { algorithm: "ECDSA_SHA_256", messageType: "RAW", message: btoa("capped") });
    assert((await exchange(signer, sign)).startsWith("HTTP/1.1 200"));
    assert((await exchange(other, healthz)).startsWith("HTTP/1.1 200"));

    const third = await connect();
    assertEquals(await exchange(third, healthz), "closed", "the connection past the cap is closed without an answer");
    third.close();
    const atCap = () => server.lines.some((l) => l.includes("2 connections are open, the most allowed (KEYCELL_MAX_CONNECTIONS)"));
    for (let i = 0; i < 100 && !atCap(); i++) await new Promise((r) => setTimeout(r, 50));
    assert(atCap(), server.lines.join("\n"));
    assert((await exchange(signer, sign)).startsWith("HTTP/1.1 200"), "the open connection still signs");
  } finally {
    signer.close();
    other.close();
    assertEquals(await server.stop(), 0);
  }
});

Deno.test("serve: a connection idle past KEYCELL_IDLE_TIMEOUT_MS is closed, and so is one sending its headers slowly past KEYCELL_HEADER_TIMEOUT_MS", async () => {
  const dataDir = await tempDir("keycell-timeouts-");
  const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline", KEYCELL_HEADER_TIMEOUT_MS: "300", KEYCELL_IDLE_TIMEOUT_MS: "300" } });
  const { hostname, port } = new URL(server.url);
  const idle = await Deno.connect({ hostname, port: Number(port) });
  const slow = await Deno.connect({ hostname, port: Number(port) });
  try {
    assert((await exchange(idle, "GET /healthz HTTP/1.1\r\nHost: keycell\r\n\r\n")).startsWith("HTTP/1.1 200"));
    // A byte every 50 ms, for far longer than the header timeout if the server let it go on.
    const head = new TextEncoder().encode(`GET /healthz HTTP/1.1\r\nHost: keycell\r\nX-Slow: ${"a".repeat(2_000)}`);
    let sent = 0;
    const trickling = (async () => {
      for (; sent < head.length; sent++) {
        if (await slow.write(head.subarray(sent, sent + 1)).then(() => false, () => true)) return;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    assert(await closedByServer(idle), "the idle connection is closed");
    assert(await closedByServer(slow), "the slow connection is closed");
    await trickling;
    assert(sent < head.length, "its headers never got through");
    const health = await fetch(`${server.url}/healthz`);
    await health.body?.cancel();
    assertEquals(health.status, 200, "new connections are served");
  } finally {
    idle.close();
    slow.close();
    assertEquals(await server.stop(), 0);
  }
});
