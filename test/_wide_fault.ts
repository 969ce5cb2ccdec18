// A wide guest with one wrong product: `i64.mul_wide_u` (0xFC 22) at one site
// turned into `i64.mul_wide_s` (0xFC 21), same operands and result types, so
// the module still validates but that multiply gives a wrong high word when
// an operand has its top bit set. Run under the V8 flag; prints what the
// compartment made of the module as one JSON line:
//
//   deno run --allow-read --v8-flags=--experimental-wasm-wide-arithmetic test/_wide_fault.ts SITE [SITE...]
//   deno run --allow-read --v8-flags=--experimental-wasm-wide-arithmetic test/_wide_fault.ts scan [FROM] [TO]

import { Compartment } from "../src/guest/compartment.ts";

const WIDE = Deno.readFileSync(
  new URL("../wasm/signer-wide.wasm", import.meta.url),
);

/**
 * Offsets of the multiplies the build's rewrite emitted: `local.get b_lo;
 * i64.mul_wide_u; local.set hi` (scripts/wasm_wide.ts), locals below 128.
 */
export function mulWideSites(bytes: Uint8Array): number[] {
  const sites: number[] = [];
  for (let i = 2; i + 3 < bytes.length; i++) {
    if (
      bytes[i] === 0xfc && bytes[i + 1] === 22 && bytes[i - 2] === 0x20 &&
      bytes[i + 2] === 0x21 && bytes[i - 1] < 128 && bytes[i + 3] < 128
    ) {
      sites.push(i);
    }
  }
  return sites;
}

/** The wide module with the multiply at `site` (an index into {@linkcode mulWideSites}) made signed. */
export function faultyWide(site: number): Uint8Array<ArrayBuffer> {
  const bytes = WIDE.slice();
  bytes[mulWideSites(bytes)[site] + 1] = 21;
  return bytes;
}

function outcome(site: number): string {
  const bytes = faultyWide(site);
  if (!WebAssembly.validate(bytes)) return "invalid";
  try {
    Compartment.create({ wasm: bytes });
    return "passed";
  } catch (err) {
    return (err as Error).message;
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "scan") {
    const total = mulWideSites(WIDE).length;
    const [from, to] = [
      Number(Deno.args[1] ?? 0),
      Number(Deno.args[2] ?? total),
    ];
    for (let site = from; site < Math.min(to, total); site++) {
      console.log(JSON.stringify({ site, total, outcome: outcome(site) }));
    }
  } else {
    for (const site of Deno.args.map(Number)) {
      console.log(JSON.stringify({ site, outcome: outcome(site) }));
    }
  }
}
