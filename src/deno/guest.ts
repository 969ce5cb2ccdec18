/**
 * Which guest module `serve` and `keyserver` run: by default (`KEYCELL_GUEST=baseline`) the 32-bit
 * guest (wasm/signer.wasm); on request (`auto`, `wide`) the wide guest (wasm/signer-wide.wasm,
 * 64-bit limbs multiplied with wasm wide arithmetic's `i64.mul_wide_u`) where it is correct. The
 * wide guest verifies each ECDSA signature it makes, which leaves it 0.45x (P-256) and 0.59x
 * (P-384) of the 32-bit guest's ECDSA rate, while it signs RSA 1.4-1.7x as fast: an opt-in for
 * RSA-heavy loads.
 *
 * V8 runs wide arithmetic only with `--v8-flags=--experimental-wasm-wide-arithmetic` (the flag is
 * process-wide, so the signer workers have it too); without it `WebAssembly.validate` refuses the
 * wide module. A module the engine accepts must also pass the compartment's known-answer
 * self-test, which every instantiation runs again.
 *
 * @module
 */

import { Compartment } from "../guest/compartment.ts";
import type { Config } from "./config.ts";
import { WasmtimeTransport } from "./wasmtime_transport.ts";

/** The module chosen, and how the ready line names it. */
export interface ChosenGuest {
  wasm: Uint8Array;
  /** `wide`, `baseline`, or the KEYCELL_WASM path. */
  guest: string;
  /** `guest: wide`, `guest: baseline (wide arithmetic unavailable)`, ... */
  description: string;
}

/** The flag V8 needs for the wide guest. */
export const WIDE_ARITHMETIC_FLAG =
  "--v8-flags=--experimental-wasm-wide-arithmetic";

/**
 * Reads the module KEYCELL_GUEST and KEYCELL_WASM ask for. Throws when `KEYCELL_GUEST=wide` and
 * the wide guest cannot run here or fails its self-test; `auto` falls back to the 32-bit guest and
 * says why.
 *
 * @example
 * ```ts
 * import { chooseGuest } from "./guest.ts";
 * import { loadConfig } from "./config.ts";
 *
 * const { wasm, description } = chooseGuest(loadConfig((name) => Deno.env.get(name)));
 * console.log(description); // "guest: baseline" by default; "guest: wide" with KEYCELL_GUEST=auto under the V8 flag
 * ```
 */
export function chooseGuest(
  config: Pick<
    Config,
    "guest" | "wasmPath" | "wasmOverridden" | "wideWasmPath"
  >,
  check?: (wide: Uint8Array) => string | undefined,
): ChosenGuest {
  if (config.wasmOverridden) {
    return {
      wasm: Deno.readFileSync(config.wasmPath),
      guest: config.wasmPath,
      description: `guest: ${config.wasmPath} (KEYCELL_WASM)`,
    };
  }
  const baseline = (why?: string): ChosenGuest => ({
    wasm: Deno.readFileSync(config.wasmPath),
    guest: "baseline",
    description: why === undefined
      ? "guest: baseline"
      : `guest: baseline (${why})`,
  });
  if (config.guest === "baseline") return baseline();
  const refuse = (why: string): ChosenGuest => {
    if (config.guest === "wide") throw new Error(`KEYCELL_GUEST=wide: ${why}`);
    return baseline(why);
  };
  let wide: Uint8Array<ArrayBuffer>;
  try {
    wide = Deno.readFileSync(config.wideWasmPath);
  } catch (err) {
    return refuse(`cannot read ${config.wideWasmPath}: ${(err as Error).name}`);
  }
  if (check !== undefined) {
    const why = check(wide);
    return why === undefined ? { wasm: wide, guest: "wide", description: "guest: wide" } : refuse(why);
  }
  if (!WebAssembly.validate(wide)) {
    if (config.guest === "wide") {
      throw new Error(
        `KEYCELL_GUEST=wide: wide arithmetic unavailable; run deno with ${WIDE_ARITHMETIC_FLAG}`,
      );
    }
    return baseline("wide arithmetic unavailable");
  }
  try {
    Compartment.create({ wasm: wide });
  } catch (err) {
    return refuse((err as Error).message);
  }
  return { wasm: wide, guest: "wide", description: "guest: wide" };
}

/**
 * {@linkcode chooseGuest} for the engine KEYCELL_ENGINE names: under `wasmtime` the wide guest is
 * checked by starting it in a wasmtime host (which always has wide arithmetic) and running its
 * self-test there; the ready line then names the engine too.
 *
 * @example
 * ```ts
 * import { chooseEngineGuest } from "./guest.ts";
 * import { loadConfig } from "./config.ts";
 *
 * const { description } = await chooseEngineGuest(loadConfig((name) => Deno.env.get(name)));
 * console.log(description); // "guest: baseline", or "guest: wide, engine: wasmtime" with KEYCELL_ENGINE=wasmtime KEYCELL_GUEST=auto
 * ```
 */
export async function chooseEngineGuest(
  config: Pick<Config, "guest" | "wasmPath" | "wasmOverridden" | "wideWasmPath" | "engine">,
): Promise<ChosenGuest> {
  if (config.engine !== "wasmtime") return chooseGuest(config);
  let failure: string | undefined;
  if (config.guest !== "baseline" && !config.wasmOverridden) {
    try {
      await (await WasmtimeTransport.start({ wasm: Deno.readFileSync(config.wideWasmPath) })).close();
    } catch (err) {
      failure = (err as Error).message;
    }
  }
  const chosen = chooseGuest(config, () => failure);
  return { ...chosen, description: `${chosen.description}, engine: wasmtime` };
}
