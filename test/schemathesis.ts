/**
 * `deno task schemathesis [max-examples] [seed]`: a larger schemathesis run than CI's (100 cases
 * per operation and phase unless told, a new seed each time, printed so a failure can be
 * replayed), against a `keycell serve` of its own.
 *
 * @module
 */

import { runSchemathesis } from "./_schemathesis.ts";

const maxExamples = Number(Deno.args[0] ?? 100);
const seed = Number(Deno.args[1] ?? Date.now() % 1_000_000);
console.log(`schemathesis: ${maxExamples} cases per operation and phase, seed ${seed}`);
const { code } = await runSchemathesis({ maxExamples, seed, inherit: true });
Deno.exitCode = code;
