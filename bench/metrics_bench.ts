/**
 * What keeping the metrics costs per request: `deno bench bench/metrics_bench.ts`. One signed
 * request records its start, its end (request, latency and token series), a timed signer call and
 * a signature; the baseline is the same signer call, awaited without metrics. The key server
 * records one answered Keyless request (a counter and a histogram).
 *
 * @module
 */

import { Metrics } from "../src/host/metrics.ts";
import { KeylessMetrics } from "../src/keyless/metrics.ts";
import { Opcode } from "../src/keyless/codec.ts";

const metrics = new Metrics();
const sign = () => Promise.resolve(1);

Deno.bench("baseline: the signer call alone", { group: "request", baseline: true }, async () => {
  await sign();
});

Deno.bench("metrics of one signed request", { group: "request" }, async () => {
  metrics.requestStarted();
  await metrics.time("sign", sign);
  metrics.signature("ECDSA_SHA_256");
  metrics.requestEnded({ route: "/v1/keys/:id/sign", method: "POST", status: 200, seconds: 0.0003, token: "edge-eu" });
});

const keyless = new KeylessMetrics();

Deno.bench("metrics of one answered Keyless request", () => {
  keyless.answered(Opcode.ECDSA_SIGN_SHA256, undefined, 0.0002);
});

Deno.bench("render /metrics (every route, 20 tokens)", (b) => {
  const full = new Metrics();
  for (let t = 0; t < 20; t++) {
    for (const status of [200, 400, 403, 429]) full.requestEnded({ route: "/v1/keys/:id/sign", method: "POST", status, seconds: 0.001, token: `token-${t}` });
  }
  b.start();
  full.render();
  b.end();
});
