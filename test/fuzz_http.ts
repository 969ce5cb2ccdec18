/**
 * `deno task fuzz:http [iterations] [seed]`: a longer HTTP fuzz run than CI's, against a `keycell
 * serve` of its own. Prints the seed so a failure can be replayed.
 *
 * @module
 */

import { fuzzServe } from "./_http_fuzz.ts";

const iterations = Number(Deno.args[0] ?? 1_000_000);
const seed = Number(Deno.args[1] ?? Date.now() % 1_000_000);
console.log(`fuzz:http: ${iterations} cases, seed ${seed}`);
const started = performance.now();
const report = await fuzzServe({ iterations, seed });
console.log(`fuzz:http: ok in ${((performance.now() - started) / 1000).toFixed(1)} s`, JSON.stringify(report));
