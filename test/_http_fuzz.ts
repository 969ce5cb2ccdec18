/**
 * An HTTP fuzzer for a running `keycell serve`: mutated JSON bodies (wrong types, missing and extra
 * fields, truncated, deeply nested, over the size limit, not UTF-8), odd methods, paths, queries and
 * headers through `fetch`, and hand-written HTTP/1.1 over raw TCP with broken framing (bad request
 * lines and headers, conflicting or lying lengths, bad chunked encoding, truncated bodies).
 *
 * Every answer keycell gives must be a success or its JSON error shape with a code from
 * src/core/errors.ts whose HTTP status it carries, and never a 5xx. The one answer that is not
 * keycell's: a request Deno's HTTP/1.1 server cannot parse is refused by that server (a bare 4xx,
 * or 505 for an HTTP version it does not speak) before any keycell code runs; those are counted
 * apart. Every case must be answered or closed within its deadline (no hang), and a well-behaved
 * client signs alongside the whole run and must keep succeeding.
 *
 * `deno task fuzz:http [iterations] [seed] [concurrency]` runs it at length, several cases at once;
 * `fuzz_http_test.ts` runs a bounded round in CI.
 *
 * @module
 */

import { prng } from "../src/keyless/fuzz.ts";
import { ERROR_CODES } from "../src/core/errors.ts";
import { ErrorAnswer } from "../src/host/schemas.ts";
import { startServer } from "./_command.ts";
import { apiClient } from "./_server.ts";
import { tempDir } from "./_temp.ts";

/** How many cases, from which seed, how many at once. */
export type HttpFuzzRun = Pick<HttpFuzzOptions, "iterations" | "seed" | "concurrency">;

/** Where to fuzz, and with what. */
export interface HttpFuzzOptions {
  url: string;
  /** An admin token: valid credentials let mutated requests get past authentication. */
  token: string;
  /** A key the fuzzer may sign with, change and delete. */
  keyId: string;
  /** A key only the well-behaved client uses. */
  goodKeyId: string;
  iterations: number;
  seed: number;
  /**
   * Cases under way at once (default 1). Each case draws from a generator of its own, seeded by
   * the run's seed and its index, so a case is the same bytes whatever runs beside it.
   */
  concurrency?: number;
  /** The server's KEYCELL_BODY_TIMEOUT_MS; a body that never arrives must be answered after it. */
  bodyTimeoutMs: number;
  /** Per-case deadline for an answer or a close, beyond any body timeout. */
  timeoutMs?: number;
}

/** What a run did. */
export interface HttpFuzzReport {
  cases: number;
  /** Cases per kind of request. */
  kinds: Record<string, number>;
  /** Answers per HTTP status and, for errors, keycell's code (`404 key_not_found`). */
  answers: Record<string, number>;
  /** Raw requests refused by the HTTP server itself, by status, before keycell saw them. */
  refusedByHttpServer: Record<string, number>;
  /** Raw requests whose connection was closed without an answer (a request that never completed). */
  closedWithoutAnswer: number;
  /** Signatures the well-behaved client got meanwhile, all of them 200. */
  wellBehavedSigns: number;
}

type Rng = () => number;

/** Statuses the HTTP server (not keycell) answers a request it cannot parse with. */
const HTTP_SERVER_REFUSALS = new Set([400, 408, 413, 414, 431, 501, 505]);

const SIGN_ALGORITHMS = [
  "ECDSA_SHA_256",
  "ECDSA_SHA_384",
  "ECDSA_SHA_512",
  "RSASSA_PKCS1_V1_5_SHA_256",
  "RSASSA_PSS_SHA_384",
  "ED25519",
  "",
];
const JWS_ALGS = ["ES256", "ES384", "RS256", "PS256", "none", "HS256"];
const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND", "get"];

const pick = <T>(rnd: Rng, items: readonly T[]): T => items[Math.floor(rnd() * items.length)];
const int = (rnd: Rng, n: number) => Math.floor(rnd() * n);

function randomBytes(rnd: Rng, n: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = int(rnd, 256);
  return b;
}

function hex(rnd: Rng, n: number): string {
  return Array.from(randomBytes(rnd, n), (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomString(rnd: Rng): string {
  return pick(rnd, [
    () => "",
    () => "x".repeat(int(rnd, 5) === 0 ? 70_000 : int(rnd, 200)),
    () => "\u0000\ud800\uffff",
    () => "../../etc/passwd",
    () => "%00%ff",
    () => hex(rnd, 32),
    () => randomBytes(rnd, 40).toBase64(),
    () => "not base64 !!",
    () => "ECDSA_SHA_256",
  ])();
}

/** An own property even for `__proto__`, so that it reaches the JSON text. */
function setOwn(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

function randomValue(rnd: Rng, depth = 0): unknown {
  const choice = int(rnd, depth > 2 ? 6 : 8);
  switch (choice) {
    case 0:
      return null;
    case 1:
      return rnd() < 0.5;
    case 2:
      return pick(rnd, [0, -1, 1.5, 1e308, -0, Number.MAX_SAFE_INTEGER + 2, 2 ** 31]);
    case 3:
    case 4:
    case 5:
      return randomString(rnd);
    case 6:
      return Array.from({ length: int(rnd, 4) }, () => randomValue(rnd, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = int(rnd, 4); i > 0; i--) setOwn(o, pick(rnd, ["a", "message", "__proto__", "constructor", "batch", "keySpec"]), randomValue(rnd, depth + 1));
      return o;
    }
  }
}

function signBody(rnd: Rng): Record<string, unknown> {
  const body: Record<string, unknown> = {
    algorithm: pick(rnd, SIGN_ALGORITHMS),
    messageType: pick(rnd, ["DIGEST", "RAW", "raw"]),
    message: randomBytes(rnd, pick(rnd, [0, 20, 32, 48, 64, 100])).toBase64(),
  };
  if (rnd() < 0.3) body.signatureFormat = pick(rnd, ["DER", "RAW", "JOSE"]);
  return body;
}

/** A valid-looking body for the route, before mutation. */
function bodyFor(rnd: Rng, route: string): unknown {
  switch (route) {
    case "sign":
      return signBody(rnd);
    case "sign-batch":
      return { batch: Array.from({ length: int(rnd, 4) }, () => signBody(rnd)) };
    case "verify":
      return { ...signBody(rnd), signature: randomBytes(rnd, 64).toBase64() };
    case "jws":
      return { protected: { alg: pick(rnd, JWS_ALGS), ...(rnd() < 0.3 ? { b64: false } : {}) }, payload: randomBytes(rnd, 20).toBase64().replace(/=+$/, "") };
    case "jwt":
      return { claims: { sub: "fuzz", exp: pick(rnd, [1, -1, "soon"]) }, expiresIn: pick(rnd, [60, 0, -5, 1.5]), alg: pick(rnd, JWS_ALGS) };
    case "keys":
      // Only EC specs are ever valid here: an RSA key takes seconds to generate, which would make
      // the run measure key generation rather than request handling.
      return { keySpec: pick(rnd, ["ECC_NIST_P256", "ECC_NIST_P384", "RSA_1024", "rsa_2048", 7]), name: pick(rnd, [undefined, "fuzz", "x".repeat(200), hex(rnd, 32)]), labels: pick(rnd, [undefined, { env: "x" }, { "Bad Name": "x" }]) };
    case "import":
      return { keySpec: pick(rnd, ["ECC_NIST_P256", "RSA_2048"]), wrappedKey: randomBytes(rnd, int(rnd, 700)).toBase64() };
    case "delete":
      return { pendingWindowDays: pick(rnd, [7, 0, 31, 1.5, "7"]) };
    default:
      return randomValue(rnd);
  }
}

/** Wrong types, missing and extra fields, or a different value altogether. */
function mutate(rnd: Rng, body: unknown): unknown {
  if (rnd() < 0.3 || typeof body !== "object" || body === null || Array.isArray(body)) return body;
  const o = { ...(body as Record<string, unknown>) };
  const keys = Object.keys(o);
  for (let n = 1 + int(rnd, 2); n > 0; n--) {
    const what = int(rnd, 4);
    const key = pick(rnd, keys.length > 0 ? keys : ["x"]);
    if (what === 0) delete o[key];
    else if (what === 1) o[key] = randomValue(rnd);
    else if (what === 2) setOwn(o, pick(rnd, ["extra", "__proto__", "keyId", "id"]), randomValue(rnd));
    else return randomValue(rnd);
  }
  return o;
}

/** The request body's bytes: JSON, mostly, but also broken, nested, huge or not text at all. */
function encodeBody(rnd: Rng, value: unknown): Uint8Array<ArrayBuffer> {
  const text = new TextEncoder().encode(JSON.stringify(value) ?? "null");
  switch (int(rnd, 14)) {
    case 0:
      return text.slice(0, int(rnd, text.length));
    case 1: {
      const b = text.slice();
      for (let i = 0; i < 3 && b.length > 0; i++) b[int(rnd, b.length)] = int(rnd, 256);
      return b;
    }
    case 2:
      return new TextEncoder().encode("[".repeat(20_000) + "]".repeat(20_000));
    case 3:
      return new TextEncoder().encode(`{"message":"${"A".repeat(70_000)}"}`);
    case 4:
      return randomBytes(rnd, int(rnd, 300));
    case 5:
      return new Uint8Array(0);
    default:
      return text;
  }
}

const ROUTES = ["sign", "sign-batch", "verify", "jws", "jwt", "jwks", "key", "keys", "import", "delete", "other"] as const;

function pathFor(rnd: Rng, route: (typeof ROUTES)[number], keyId: string): { path: string; method: string } {
  const id = rnd() < 0.7 ? keyId : pick(rnd, [hex(rnd, 32), "fuzz", "x".repeat(3000), "%2e%2e", "%00", keyId.toUpperCase(), keyId.slice(1), ""]);
  const query = rnd() < 0.2 ? "?" + pick(rnd, ["format=pem", "format=jwk", "format=xml", "limit=-1", "limit=abc&cursor=zz", "immediately=true", "immediately=maybe", "a=%zz", "&&=="]) : "";
  switch (route) {
    case "sign":
    case "sign-batch":
    case "verify":
    case "jws":
    case "jwt":
      return { path: `/v1/keys/${id}/${route}${query}`, method: "POST" };
    case "jwks":
      return { path: `/v1/keys/${id}/jwks${query}`, method: pick(rnd, ["PUT", "DELETE"]) };
    case "key":
      return { path: `/v1/keys/${id}${query}`, method: pick(rnd, ["GET", "PATCH"]) };
    case "keys":
      return { path: `/v1/keys${query}`, method: pick(rnd, ["GET", "POST"]) };
    case "import":
      return { path: pick(rnd, ["/v1/keys/import", "/v1/wrapping-key"]), method: pick(rnd, ["GET", "POST"]) };
    case "delete":
      // Mostly not the fuzzer's own key, so that most cases still reach a key that signs.
      return { path: `/v1/keys/${rnd() < 0.1 ? keyId : hex(rnd, 32)}${query}`, method: "DELETE" };
    default:
      return {
        path: pick(rnd, ["/", "/healthz", "/livez", "/readyz", "/metrics", "/openapi.json", "/reference", "/.well-known/jwks.json", "/v1", "/v1/", "/v1/trap", "//v1//keys", "/v1/keys/", `/${"a/".repeat(500)}`, "/%ff%fe", "/v1/keys/a/b/c/d"]) + query,
        method: "GET",
      };
  }
}

function headersFor(rnd: Rng, token: string): Headers {
  const h = new Headers();
  const auth = int(rnd, 10);
  if (auth < 7) h.set("Authorization", `Bearer ${token}`);
  else if (auth === 7) h.set("Authorization", pick(rnd, ["Bearer", "Bearer ", `Basic ${btoa("a:b")}`, `Bearer ${token}x`, `bearer ${token}`, `Bearer ${"t".repeat(10_000)}`]));
  else if (auth === 8) h.set("Authorization", `Bearer ${hex(rnd, 32)}`);
  const type = int(rnd, 10);
  if (type < 7) h.set("Content-Type", "application/json");
  else if (type === 7) h.set("Content-Type", pick(rnd, ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json; charset=utf-16", "*/*", ";;;"]));
  if (rnd() < 0.05) h.set("Content-Encoding", pick(rnd, ["gzip", "br", "identity"]));
  if (rnd() < 0.05) h.set("Accept", pick(rnd, ["application/xml", "*/*;q=x", ""]));
  if (rnd() < 0.05) h.set("X-Request-Id", pick(rnd, ["x".repeat(5000), "a b", ""]));
  return h;
}

/** Checks one answer keycell gave; throws what is wrong with it. */
function checkAnswer(status: number, contentType: string | null, body: Uint8Array, method: string): string {
  if (status >= 500) throw new Error(`answered ${status}: ${new TextDecoder().decode(body.slice(0, 300))}`);
  if (status < 400) return String(status);
  if (method === "HEAD" && body.length === 0) return `${status} (HEAD)`;
  if (!contentType?.startsWith("application/json")) throw new Error(`answered ${status} with ${contentType}, not keycell's JSON error`);
  const parsed = ErrorAnswer.safeParse(JSON.parse(new TextDecoder().decode(body)));
  if (!parsed.success) throw new Error(`answered ${status} with a body that is not keycell's error shape: ${new TextDecoder().decode(body.slice(0, 300))}`);
  const code = parsed.data.error.code;
  if (ERROR_CODES[code].http !== status) throw new Error(`answered ${status} with code ${code}, whose status is ${ERROR_CODES[code].http}`);
  return `${status} ${code}`;
}

async function fetchCase(rnd: Rng, options: HttpFuzzOptions, deadlineMs: number): Promise<{ kind: string; answer: string }> {
  const route = pick(rnd, ROUTES);
  let { path, method } = pathFor(rnd, route, options.keyId);
  if (rnd() < 0.1) method = pick(rnd, METHODS);
  const headers = headersFor(rnd, options.token);
  const hasBody = !["GET", "HEAD"].includes(method.toUpperCase()) && rnd() < 0.95;
  const body = hasBody ? encodeBody(rnd, mutate(rnd, bodyFor(rnd, route === "delete" ? "delete" : route))) : undefined;
  try {
    const res = await fetch(`${options.url}${path}`, { method, headers, body, signal: AbortSignal.timeout(deadlineMs) });
    const bytes = new Uint8Array(await res.arrayBuffer());
    return { kind: `fetch ${route}`, answer: checkAnswer(res.status, res.headers.get("content-type"), bytes, method) };
  } catch (e) {
    const described = `${method} ${path.slice(0, 120)} (${[...headers.keys()].join(", ")}; body ${new TextDecoder().decode(body?.slice(0, 200))}, ${body?.length ?? 0} bytes)`;
    throw new Error(`${described}: ${(e as Error).message}`);
  }
}

/** A raw request, and whether it is complete (else the client half-closes after sending it). */
interface RawRequest {
  bytes: Uint8Array<ArrayBuffer>;
  complete: boolean;
  /** The client neither finishes the body nor closes: the server's body timeout must answer. */
  stalls?: boolean;
}

function rawRequest(rnd: Rng, options: HttpFuzzOptions): { kind: string; request: RawRequest } {
  const te = new TextEncoder();
  const signPath = `/v1/keys/${options.keyId}/sign`;
  const json = JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "RAW", message: "aGVsbG8=" });
  const head = (lines: string[]) => lines.join("\r\n") + "\r\n\r\n";
  const auth = `Authorization: Bearer ${options.token}`;
  const post = (extra: string[]) => [`POST ${signPath} HTTP/1.1`, "Host: fuzz", auth, "Content-Type: application/json", "Connection: close", ...extra];
  const cases: Array<() => [string, RawRequest]> = [
    () => ["raw garbage", { bytes: randomBytes(rnd, 1 + int(rnd, 400)), complete: false }],
    () => ["raw garbage line", { bytes: te.encode(head([String.fromCharCode(...randomBytes(rnd, 1 + int(rnd, 60)).map((b) => 32 + (b % 95)))])), complete: true }],
    () => ["raw request line", { bytes: te.encode(head([pick(rnd, ["GET", "GET / HTTP/9.9", "GET / HTTP/1.1 extra", "G@T / HTTP/1.1", "GET  /  HTTP/1.1", "GET /\u0000 HTTP/1.1", `GET /${"a".repeat(100_000)} HTTP/1.1`, "GET http://evil/ HTTP/1.1", "GET * HTTP/1.1", "CONNECT fuzz:443 HTTP/1.1"]), "Host: fuzz", "Connection: close"])), complete: true }],
    () => ["raw headers", { bytes: te.encode(head(["GET /v1/keys HTTP/1.1", "Host: fuzz", auth, "Connection: close", pick(rnd, ["NoColon", "Bad Name: x", ": empty", `X-Big: ${"v".repeat(100_000)}`, ...Array.from({ length: 1 }, () => Array.from({ length: 300 }, (_, i) => `X-${i}: v`).join("\r\n")), "Host: second", "X-Obs:\r\n folded", "X-Nul: a\u0000b"])])), complete: true }],
    () => ["raw no host", { bytes: te.encode(head(["GET /healthz HTTP/1.1", "Connection: close"])), complete: true }],
    () => ["raw http/1.0", { bytes: te.encode(head(["GET /healthz HTTP/1.0"])), complete: true }],
    () => ["raw bad content-length", { bytes: te.encode(head(post([`Content-Length: ${pick(rnd, ["abc", "-1", "1e3", "99999999999999999999", "5, 6", " 10"])}`])) + json), complete: false }],
    () => ["raw length and chunked", { bytes: te.encode(head(post([`Content-Length: ${json.length}`, "Transfer-Encoding: chunked"])) + `${json.length.toString(16)}\r\n${json}\r\n0\r\n\r\n`), complete: true }],
    () => ["raw chunked", { bytes: te.encode(head(post(["Transfer-Encoding: chunked"])) + `${json.length.toString(16)}\r\n${json}\r\n0\r\n\r\n`), complete: true }],
    () => ["raw bad chunk", { bytes: te.encode(head(post(["Transfer-Encoding: chunked"])) + pick(rnd, ["zz\r\nabc\r\n0\r\n\r\n", "5\r\nabc\r\n0\r\n\r\n", "ffffffffffffffffff\r\n", `${json.length.toString(16)}\r\n${json}`, "0\r\nX-Trailer: 1\r\n\r\n", "-1\r\n\r\n"])), complete: false }],
    () => ["raw unknown transfer-encoding", { bytes: te.encode(head(post(["Transfer-Encoding: gzip, chunked, br"])) + json), complete: false }],
    () => {
      const cut = int(rnd, json.length);
      return ["raw truncated body", { bytes: te.encode(head(post([`Content-Length: ${json.length}`])) + json.slice(0, cut)), complete: false }];
    },
    () => ["raw body longer than its length", { bytes: te.encode(head(post([`Content-Length: ${json.length}`])) + json + "GET /healthz HTTP/1.1\r\n\r\n" + "x".repeat(int(rnd, 2000))), complete: true }],
    () => ["raw huge length", { bytes: te.encode(head(post([`Content-Length: ${pick(rnd, [70_000, 1_000_000_000])}`])) + json), complete: false }],
    () => ["raw expect", { bytes: te.encode(head(post([`Content-Length: ${json.length}`, "Expect: 100-continue"])) + json), complete: true }],
  ];
  // Rarely, a body that neither arrives nor is abandoned, to check the body deadline answers it.
  if (rnd() < 0.004) {
    return { kind: "raw stalled body", request: { bytes: te.encode(head(post(["Content-Length: 1000"])) + json.slice(0, 10)), complete: false, stalls: true } };
  }
  const [kind, request] = pick(rnd, cases)();
  return { kind, request };
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** The first response on a connection: status, headers and body (chunked decoded), or undefined for none. */
function parseResponse(bytes: Uint8Array): { status: number; headers: Map<string, string>; body: Uint8Array } | undefined {
  const crlf = new TextEncoder().encode("\r\n\r\n");
  const end = indexOf(bytes, crlf);
  if (end < 0) return undefined;
  const lines = new TextDecoder().decode(bytes.slice(0, end)).split("\r\n");
  const status = Number(lines[0].split(" ")[1]);
  // 100 Continue comes before the answer.
  if (status === 100) return parseResponse(bytes.slice(end + 4));
  const headers = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  let body = bytes.slice(end + 4);
  if (headers.get("transfer-encoding")?.includes("chunked")) {
    const out: number[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = indexOf(body, crlf.slice(0, 2), at);
      if (lineEnd < 0) break;
      const size = parseInt(new TextDecoder().decode(body.slice(at, lineEnd)), 16);
      if (!(size > 0)) break;
      out.push(...body.slice(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    body = new Uint8Array(out);
  } else if (headers.has("content-length")) {
    body = body.slice(0, Number(headers.get("content-length")));
  }
  return { status, headers, body };
}

async function rawCase(rnd: Rng, options: HttpFuzzOptions, deadlineMs: number, report: HttpFuzzReport): Promise<{ kind: string; answer: string }> {
  const { kind, request } = rawRequest(rnd, options);
  const { hostname, port } = new URL(options.url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const received: number[] = [];
  const deadline = (request.stalls ? options.bodyTimeoutMs : 0) + deadlineMs;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const reading = (async () => {
      const buf = new Uint8Array(16 * 1024);
      for (;;) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) return;
        received.push(...buf.subarray(0, n));
        // A stalled body's answer need not come with a close: the client is still sending.
        if (request.stalls && parseResponse(new Uint8Array(received))) return;
      }
    })();
    await conn.write(request.bytes).catch(() => undefined);
    if (!request.complete && !request.stalls) await conn.closeWrite().catch(() => undefined);
    const timedOut = new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), deadline));
    if (await Promise.race([reading, timedOut]) === "timeout") {
      // An answer that came but no close is fine for a stalled body: it was answered.
      if (!(request.stalls && parseResponse(new Uint8Array(received)))) {
        throw new Error(`${kind}: neither answered nor closed within ${deadline} ms (got ${received.length} bytes)`);
      }
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* already closed by the server */ }
  }
  const response = parseResponse(new Uint8Array(received));
  if (!response) {
    if (request.stalls) throw new Error(`${kind}: closed without the body-timeout answer`);
    report.closedWithoutAnswer++;
    return { kind, answer: "closed" };
  }
  const contentType = response.headers.get("content-type") ?? null;
  if (!contentType && response.body.length === 0 && HTTP_SERVER_REFUSALS.has(response.status)) {
    report.refusedByHttpServer[response.status] = (report.refusedByHttpServer[response.status] ?? 0) + 1;
    return { kind, answer: `${response.status} (HTTP server)` };
  }
  if (request.stalls && response.status !== 408) throw new Error(`${kind}: answered ${response.status}, not 408`);
  try {
    return { kind, answer: checkAnswer(response.status, contentType, response.body, "POST") };
  } catch (e) {
    throw new Error(`${kind}: ${(e as Error).message}`);
  }
}

/** Signs with the well-behaved client's key until `stop` resolves; every answer must be 200. */
async function wellBehavedClient(options: HttpFuzzOptions, stop: Promise<void>): Promise<number> {
  let stopped = false;
  stop.then(() => stopped = true);
  let signs = 0;
  const digest = new Uint8Array(32).fill(7).toBase64();
  while (!stopped) {
    const res = await fetch(`${options.url}/v1/keys/${options.goodKeyId}/sign`, {
      method: "POST",
      headers: { Authorization: `Bearer ${options.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ algorithm: "ECDSA_SHA_256", messageType: "DIGEST", message: digest }),
      signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`the well-behaved client's sign answered ${res.status}: ${text}`);
    signs++;
    await new Promise((r) => setTimeout(r, 20));
  }
  return signs;
}

/**
 * Runs `options.iterations` cases against the server; throws on the first answer that breaks the
 * rules above, naming the seed and case so it can be replayed.
 *
 * @example
 * ```ts
 * import { fuzzHttp } from "./_http_fuzz.ts";
 *
 * async function run(url: string, token: string, keyId: string, goodKeyId: string) {
 *   return await fuzzHttp({ url, token, keyId, goodKeyId, iterations: 100, seed: 1, bodyTimeoutMs: 1000 });
 * }
 * ```
 */
export async function fuzzHttp(options: HttpFuzzOptions): Promise<HttpFuzzReport> {
  const deadlineMs = options.timeoutMs ?? 10_000;
  const report: HttpFuzzReport = { cases: 0, kinds: {}, answers: {}, refusedByHttpServer: {}, closedWithoutAnswer: 0, wellBehavedSigns: 0 };
  let finish!: () => void;
  const stop = new Promise<void>((r) => finish = r);
  const client = wellBehavedClient(options, stop);
  // A failure of the client or of any case is reported at once, not only when the cases are done.
  let failure: unknown;
  client.catch((e) => failure ??= e);
  let next = 0;
  const lane = async () => {
    while (failure === undefined && next < options.iterations) {
      const i = next++;
      const rnd = caseRng(options.seed, i);
      let result: { kind: string; answer: string };
      try {
        result = rnd() < 0.7 ? await fetchCase(rnd, options, deadlineMs) : await rawCase(rnd, options, deadlineMs, report);
      } catch (e) {
        failure ??= new Error(`fuzz:http seed ${options.seed}, case ${i}: ${(e as Error).message}`, { cause: e });
        return;
      }
      report.cases++;
      report.kinds[result.kind] = (report.kinds[result.kind] ?? 0) + 1;
      report.answers[result.answer] = (report.answers[result.answer] ?? 0) + 1;
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 1) }, lane));
  } finally {
    finish();
    report.wellBehavedSigns = await client.catch((e) => {
      failure ??= e;
      return 0;
    });
  }
  if (failure !== undefined) throw failure;
  return report;
}

/** Case `index`'s own generator: consecutive seeds of `prng` give unrelated sequences. */
function caseRng(seed: number, index: number): Rng {
  return prng(Math.imul(seed >>> 0, 0x9e3779b1) + index);
}

/**
 * Starts a `keycell serve` of its own (two P-256 keys generated through the API, a 1 s body
 * deadline), fuzzes it, checks that it still answers and stops cleanly, and removes its data.
 *
 * @example
 * ```ts
 * import { fuzzServe } from "./_http_fuzz.ts";
 *
 * async function bounded() {
 *   return await fuzzServe({ iterations: 100, seed: 1 });
 * }
 * ```
 */
export async function fuzzServe(run: HttpFuzzRun): Promise<HttpFuzzReport> {
  const dataDir = await tempDir("keycell-fuzz-http-");
  const bodyTimeoutMs = 1000;
  try {
    const server = await startServer({ dataDir, env: { KEYCELL_BODY_TIMEOUT_MS: String(bodyTimeoutMs) } });
    let report: HttpFuzzReport | undefined;
    let failure: unknown;
    try {
      report = await fuzzRunning(server.url, dataDir, bodyTimeoutMs, run);
    } catch (e) {
      failure = e;
    }
    const code = await server.stop();
    if (failure) throw failure;
    if (code !== 0) throw new Error(`serve exited ${code} on SIGTERM after the fuzz run:\n${server.lines.slice(-20).join("\n")}`);
    return report!;
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
}

async function fuzzRunning(url: string, dataDir: string, bodyTimeoutMs: number, run: HttpFuzzRun): Promise<HttpFuzzReport> {
  const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
  const api = apiClient({ url }, token);
  const ids: string[] = [];
  for (let i = 0; i < 2; i++) {
    const res = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
    if (res.status !== 201) throw new Error(`generating a key answered ${res.status}: ${await res.text()}`);
    ids.push((await res.json()).id);
  }
  // The wrapping key is an RSA-4096 key made on first use, seconds of work that would otherwise
  // land inside one case's deadline.
  const wrapping = await api("GET", "/v1/wrapping-key");
  if (wrapping.status !== 200) throw new Error(`GET /v1/wrapping-key answered ${wrapping.status}: ${await wrapping.text()}`);
  await wrapping.body?.cancel();
  const report = await fuzzHttp({ url, token, keyId: ids[0], goodKeyId: ids[1], bodyTimeoutMs, ...run });
  const health = await fetch(`${url}/readyz`);
  await health.body?.cancel();
  if (health.status !== 200) throw new Error(`after the run /readyz answered ${health.status}`);
  return report;
}
