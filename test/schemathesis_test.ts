/**
 * schemathesis against a real `keycell serve`, bounded for CI: every operation of
 * `/openapi.json`, a few cases each and a fixed seed, so a failure replays. `deno task
 * schemathesis` runs a larger one with a new seed.
 */

import { assert } from "./_assert.ts";
import { runSchemathesis } from "./_schemathesis.ts";

/** Cases per operation and phase: enough to reach every operation, status and schema in CI. */
const MAX_EXAMPLES = 5;
const SEED = 1;

Deno.test("schemathesis: no 5xx, and every answer of every operation is what /openapi.json says", async () => {
  const { code, output } = await runSchemathesis({ maxExamples: MAX_EXAMPLES, seed: SEED });
  assert(code === 0, `schemathesis failed (exit ${code}):\n${output}`);
  const operations = /Operations:\s+(\d+) selected \/ (\d+) total/.exec(output);
  assert(operations !== null && operations[1] === operations[2] && Number(operations[1]) >= 20, `every operation is tested:\n${output}`);
  const cases = /(\d+) generated, (\d+) passed/.exec(output);
  assert(cases !== null && cases[1] === cases[2] && Number(cases[1]) > 100, `cases were generated and all passed:\n${output}`);
  for (const phase of ["Coverage", "Fuzzing", "Stateful"]) assert(output.includes(`✅ ${phase}`), `the ${phase} phase ran and passed:\n${output}`);
});
