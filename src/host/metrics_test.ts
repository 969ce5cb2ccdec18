import { assert, assertEquals } from "../../test/_assert.ts";
import { createApp } from "./app.ts";
import { sha256Hex, TokenStore } from "./auth.ts";
import { Metrics, SIGNER_OPERATIONS } from "./metrics.ts";
import { ALGORITHMS } from "../core/algorithms.ts";
import { VERSION } from "../core/version.ts";
import type { SignerClient } from "../core/signer_client.ts";

/** One sample line of the text format: name, `{label="value",...}` with escaped values, a number. */
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*)\})? (-?[0-9.e+-]+|\+Inf|NaN)$/;

/** Parses an exposition strictly: every line a comment, a blank or a well-formed sample. */
function samples(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    const match = SAMPLE.exec(line);
    assert(match, `not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[k] = v.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    out.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return out;
}

function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return samples(text).find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

Deno.test("metrics: build info, and the series whose labels are known start at zero", async () => {
  const text = await new Metrics().render();
  assertEquals(value(text, "keycell_build_info", { version: VERSION }), 1);
  for (const [algorithm, row] of Object.entries(ALGORITHMS)) {
    assertEquals(value(text, "keycell_signatures_total", { algorithm }), row.http ? 0 : undefined, algorithm);
  }
  for (const operation of SIGNER_OPERATIONS) {
    assertEquals(value(text, "keycell_signer_seconds_count", { operation }), 0, operation);
    assertEquals(value(text, "keycell_signer_seconds_sum", { operation }), 0, operation);
  }
  assertEquals(value(text, "keycell_audit_write_failures_total"), 0);
  assertEquals(value(text, "keycell_http_in_flight"), 0);
  assert(text.includes("# TYPE keycell_signer_seconds histogram"), text);
  assert(text.includes("# TYPE keycell_http_request_duration_seconds histogram"), text);
});

Deno.test("metrics: a token name with a quote, a backslash and a newline is escaped, and the exposition stays well formed", async () => {
  const name = 'edge "eu"\\west\nsecond line';
  const token = "token-with-an-odd-name";
  const signer = { mode: "stub", listKeys: () => Promise.resolve([]) } as unknown as SignerClient;
  const metrics = new Metrics();
  const app = createApp({ signer, metrics, tokens: TokenStore.fromEntries([{ name, sha256: sha256Hex(token), keys: "*" }]) });
  assertEquals((await app.request("/v1/keys", { headers: { Authorization: `Bearer ${token}` } })).status, 200);
  const text = await metrics.render();
  assert(text.includes('keycell_token_requests_total{token="edge \\"eu\\"\\\\west\\nsecond line",status="200"} 1\n'), text);
  assertEquals(value(text, "keycell_token_requests_total", { token: name, status: "200" }), 1, "parsed back to the name");
});

Deno.test("metrics: latency by route pattern and method, signer time by operation, requests in flight", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const signer = { mode: "stub", listKeys: () => held.then(() => []), health: () => Promise.resolve() } as unknown as SignerClient;
  const metrics = new Metrics();
  const token = "metrics-test-admin";
  const app = createApp({ signer, metrics, tokens: TokenStore.fromEntries([{ name: "admin", sha256: sha256Hex(token), keys: "*" }]) });
  let text = await metrics.render();
  for (const [route, method] of [["/v1/keys/:id/sign", "POST"], ["/v1/keys", "GET"], ["/livez", "GET"], ["/readyz", "GET"]]) {
    assertEquals(value(text, "keycell_http_request_duration_seconds_count", { route, method }), 0, `${method} ${route} starts at zero`);
  }

  const listing = app.request("/v1/keys", { headers: { Authorization: `Bearer ${token}` } });
  assertEquals(value(await metrics.render(), "keycell_http_in_flight"), 1, "the held listing is in flight");
  release();
  assertEquals((await listing).status, 200);
  await app.request("/readyz");
  await app.request("/livez", { method: "FOO" });

  text = await metrics.render();
  assertEquals(value(text, "keycell_http_in_flight"), 0);
  assertEquals(value(text, "keycell_http_request_duration_seconds_count", { route: "/v1/keys", method: "GET" }), 1);
  assertEquals(value(text, "keycell_http_request_duration_seconds_count", { route: "/readyz", method: "GET" }), 1);
  assertEquals(value(text, "keycell_http_request_duration_seconds_count", { method: "FOO" }), undefined, "a method from the client is no label");
  assertEquals(value(text, "keycell_http_request_duration_seconds_count", { route: "/*", method: "other" }), 1);
  assertEquals(value(text, "keycell_signer_seconds_count", { operation: "list" }), 1);
  assertEquals(value(text, "keycell_signer_seconds_count", { operation: "health" }), 1);
  assertEquals(value(text, "keycell_http_requests_total", { route: "/v1/keys", status: "200" }), 1, "the old series is kept");
  // Buckets are cumulative and end at the count.
  const buckets = samples(text).filter((s) => s.name === "keycell_signer_seconds_bucket" && s.labels.operation === "list");
  assertEquals(buckets.at(-1)?.labels.le, "+Inf");
  assertEquals(buckets.at(-1)?.value, 1);
  for (let i = 1; i < buckets.length; i++) assert(buckets[i].value >= buckets[i - 1].value, JSON.stringify(buckets));
});

Deno.test("metrics: a failed signer call is timed too, and audit write failures are counted", async () => {
  const metrics = new Metrics();
  await metrics.time("generate", () => Promise.reject(new Error("trapped"))).catch(() => {});
  metrics.auditWriteFailed();
  const text = await metrics.render();
  assertEquals(value(text, "keycell_signer_seconds_count", { operation: "generate" }), 1);
  assertEquals(value(text, "keycell_audit_write_failures_total"), 1);
});

Deno.test("metrics: the exposition of a small sequence, block for block (the text prom-client 15.1.3 wrote for the same calls)", async () => {
  const metrics = new Metrics();
  metrics.knownRoute("/v1/keys/:id/sign", "POST");
  metrics.requestStarted();
  metrics.requestStarted();
  metrics.requestEnded({ route: "/v1/keys/:id/sign", method: "POST", status: 200, seconds: 0.0003, token: "edge-eu" });
  metrics.requestEnded({ route: "/*", method: "BREW", status: 404, seconds: 0.00025 });
  metrics.signature("ECDSA_SHA_256");
  metrics.verification("ED25519", false);
  const blocks = new Map((await metrics.render()).split("\n\n").map((block) => [block.split(" ")[2], block]));
  assertEquals(
    blocks.get("keycell_http_requests_total"),
    `# HELP keycell_http_requests_total HTTP requests by route pattern and status.
# TYPE keycell_http_requests_total counter
keycell_http_requests_total{route="/v1/keys/:id/sign",status="200"} 1
keycell_http_requests_total{route="/*",status="404"} 1`,
  );
  const bounds = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
  const histogram = (labels: string, seconds: number) => [
    ...bounds.map((le) => `keycell_http_request_duration_seconds_bucket{le="${le}",${labels}} ${seconds <= le ? 1 : 0}`),
    `keycell_http_request_duration_seconds_bucket{le="+Inf",${labels}} 1`,
    `keycell_http_request_duration_seconds_sum{${labels}} ${seconds}`,
    `keycell_http_request_duration_seconds_count{${labels}} 1`,
  ];
  assertEquals(blocks.get("keycell_http_request_duration_seconds"), [
    "# HELP keycell_http_request_duration_seconds Time from a request's arrival to its answer, by route pattern and method.",
    "# TYPE keycell_http_request_duration_seconds histogram",
    ...histogram('route="/v1/keys/:id/sign",method="POST"', 0.0003),
    ...histogram('route="/*",method="other"', 0.00025),
  ].join("\n"));
  assertEquals(blocks.get("keycell_http_in_flight"), "# HELP keycell_http_in_flight HTTP requests being answered now.\n# TYPE keycell_http_in_flight gauge\nkeycell_http_in_flight 0");
  assertEquals(
    blocks.get("keycell_token_requests_total"),
    `# HELP keycell_token_requests_total Authenticated requests, by token name (from tokens.json) and status.
# TYPE keycell_token_requests_total counter
keycell_token_requests_total{token="edge-eu",status="200"} 1`,
  );
  assertEquals(
    blocks.get("keycell_verifications_total"),
    `# HELP keycell_verifications_total Signatures checked with a public key, by algorithm and outcome.
# TYPE keycell_verifications_total counter
keycell_verifications_total{algorithm="ED25519",valid="false"} 1`,
  );
  assertEquals(blocks.get("keycell_signatures_total")?.split("\n").slice(0, 2), [
    "# HELP keycell_signatures_total Signatures made, by algorithm.",
    "# TYPE keycell_signatures_total counter",
  ]);
  assertEquals(value(blocks.get("keycell_signatures_total")!, "keycell_signatures_total", { algorithm: "ECDSA_SHA_256" }), 1);
  assertEquals(
    blocks.get("keycell_audit_write_failures_total"),
    "# HELP keycell_audit_write_failures_total Audit log writes that failed (their records are lost).\n# TYPE keycell_audit_write_failures_total counter\nkeycell_audit_write_failures_total 0",
  );
  assertEquals(blocks.get("keycell_build_info"), `# HELP keycell_build_info keycell's version; always 1.\n# TYPE keycell_build_info gauge\nkeycell_build_info{version="${VERSION}"} 1\n`);
  assertEquals([...blocks.keys()], [
    "keycell_http_requests_total",
    "keycell_http_request_duration_seconds",
    "keycell_http_in_flight",
    "keycell_token_requests_total",
    "keycell_signatures_total",
    "keycell_verifications_total",
    "keycell_signer_seconds",
    "keycell_audit_write_failures_total",
    "keycell_build_info",
  ]);
});
