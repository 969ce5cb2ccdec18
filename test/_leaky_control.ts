/**
 * The isolation suite's positive control: a program that does exactly what keycell must never do,
 * keeping a private key in JS memory, once as bytes (a Uint8Array of the DER) and once as a string
 * (the PEM text). The process scan and the heap-snapshot check must both catch it, or the suite
 * proves nothing.
 *
 * Usage: deno run --allow-read test/_leaky_control.ts KEY.pem KEY.der
 *
 * @module
 */

const [pemPath, derPath] = Deno.args;
const kept = {
  der: Deno.readFileSync(derPath),
  pem: Deno.readTextFileSync(pemPath),
};
(globalThis as { kept?: unknown }).kept = kept;
console.log(`control ready, holding ${kept.der.length} DER bytes and ${kept.pem.length} PEM characters`);
setInterval(() => {}, 60_000);
