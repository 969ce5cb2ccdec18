/**
 * keycell's version, reported by `keycell --version` and sent by its client.
 *
 * @example
 * ```ts
 * import { VERSION } from "./version.ts";
 *
 * console.log(`keycell ${VERSION}`);
 * ```
 *
 * @module
 */

/** The release this tree is. */
export const VERSION = "0.9.0";
