/**
 * The guest module, read once per test module: its bytes for transports that take bytes, and
 * compiled once for code that takes a `WebAssembly.Module`.
 *
 * @module
 */

/** Path of the committed guest module. */
export const WASM_PATH: string = new URL("../wasm/signer.wasm", import.meta.url).pathname;

/**
 * The guest module's bytes. Shared: a caller that must transfer or change them takes a copy.
 *
 * @example
 * ```ts
 * import { WASM } from "./_wasm.ts";
 *
 * WebAssembly.validate(WASM); // true
 * ```
 */
export const WASM: Uint8Array<ArrayBuffer> = Deno.readFileSync(WASM_PATH);

let compiled: WebAssembly.Module | undefined;

/**
 * The guest module compiled, on first use.
 *
 * @example
 * ```ts
 * import { wasmModule } from "./_wasm.ts";
 *
 * WebAssembly.Module.exports(wasmModule()).length > 0; // true
 * ```
 */
export function wasmModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(WASM);
  return compiled;
}
