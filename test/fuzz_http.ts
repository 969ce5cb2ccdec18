/**
 * `deno task fuzz:http [iterations] [seed] [concurrency]`: a longer HTTP fuzz run than CI's, against
 * a `keycell serve` of its own, `concurrency` cases at once (default 8). Prints the seed; a failure
 * names its case, which is the same bytes in any run of that seed.
 *
 * @module
 */

import { fuzzServe } from "./_http_fuzz.ts";

const iterations = Number(Deno.args[0] ?? 1_000_000);
const seed = Number(Deno.args[1] ?? Date.now() % 1_000_000);
const concurrency = Number(Deno.args[2] ?? 8);
console.log(`fuzz:http: ${iterations} cases, seed ${seed}, ${concurrency} at once`);
const started = performance.now();
const report = await fuzzServe({ iterations, seed, concurrency });
console.log(`fuzz:http: ok in ${((performance.now() - started) / 1000).toFixed(1)} s`, JSON.stringify(report));
