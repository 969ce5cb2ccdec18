/**
 * Which guest module `serve` and `keyserver` run: by default (`KEYCELL_GUEST=baseline`) the 32-bit
 * guest (wasm/signer.wasm); on request the wide guest (wasm/signer-wide.wasm, 64-bit limbs
 * multiplied with wasm wide arithmetic's `i64.mul_wide_u`) where it is correct. The wide guest
 * signs RSA 1.4-1.7x as fast, but verifies each ECDSA signature it makes, which leaves it 0.45x
 * (P-256) and 0.59x (P-384) of the 32-bit guest's ECDSA rate. So `auto` runs both, RSA keys in
 * the wide guest and EC keys in the 32-bit one (src/guest/family_guests.ts); `wide` runs the wide
 * guest for every key.
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
  /** With `auto` where the wide guest runs: the wide module, for RSA keys (`wasm` is for EC keys). */
  rsaWasm?: Uint8Array;
  /** `wide`, `baseline`, `wide for RSA and baseline for EC`, or the KEYCELL_WASM path. */
  guest: string;
  /** `guest: wide`, `guest: baseline (wide arithmetic unavailable)`, ... */
  description: string;
}

/** The flag V8 needs for the wide guest. */
export const WIDE_ARITHMETIC_FLAG =
  "--v8-flags=--experimental-wasm-wide-arithmetic";

/**
 * Reads the module KEYCELL_GUEST and KEYCELL_WASM ask for. Throws when `KEYCELL_GUEST=wide` and
 * the wide guest cannot run here or fails its self-test; `auto` falls back to the 32-bit guest for
 * every key and says why. With `check` (another engine's verdict on the wide module), `auto` runs
 * the wide guest for every key, as `wide` does.
 *
 * @example
 * ```ts
 * import { chooseGuest } from "./guest.ts";
 * import { loadConfig } from "./config.ts";
 *
 * const { wasm, description } = chooseGuest(loadConfig((name) => Deno.env.get(name)));
 * console.log(description); // "guest: baseline" by default; "guest: wide for RSA and baseline for EC" with KEYCELL_GUEST=auto under the V8 flag
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
  if (config.guest === "wide") return { wasm: wide, guest: "wide", description: "guest: wide" };
  const split = "wide for RSA and baseline for EC";
  return { ...baseline(), rsaWasm: wide, guest: split, description: `guest: ${split}` };
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
