import { assert, assertEquals } from "./_assert.ts";
import { fuzzServe } from "./_http_fuzz.ts";

Deno.test("serve: a bounded HTTP fuzz run gets only typed answers, no 5xx and no hang, while a client keeps signing", async () => {
  const seed = 20261129;
  const report = await fuzzServe({ iterations: 2000, seed, concurrency: 4 });
  assertEquals(report.cases, 2000);
  assert(report.wellBehavedSigns > 0, "the well-behaved client signed during the run");
  // The run reached keycell's own answers, not only the HTTP server's refusals.
  assert(Object.keys(report.answers).some((a) => a.startsWith("200")), JSON.stringify(report.answers));
  assert(Object.keys(report.answers).some((a) => a.startsWith("400 bad_request")), JSON.stringify(report.answers));
});
