/**
 * Temporary directories for tests, each removed with everything in it when the test module that
 * made it has finished (its tests passed or not), so that no fixture private key, master key or
 * key store outlives the run.
 *
 * @module
 */

const made = new Set<string>();

function removeAll(): void {
  for (const dir of made) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  made.clear();
}

// `unload` fires once a test module's tests have all run, and when a script exits.
globalThis.addEventListener("unload", removeAll);

/**
 * Makes a temporary directory that is removed when this module's tests are done; a test may
 * remove it sooner.
 *
 * @example
 * ```ts
 * import { tempDir } from "./_temp.ts";
 *
 * const dir = await tempDir("keycell-example-");
 * await Deno.writeTextFile(`${dir}/note.txt`, "removed with the directory");
 * ```
 */
export async function tempDir(prefix = "keycell-test-"): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  made.add(dir);
  return dir;
}

/**
 * {@linkcode tempDir} for code that cannot wait.
 *
 * @example
 * ```ts
 * import { tempDirSync } from "./_temp.ts";
 *
 * const dir = tempDirSync("keycell-example-");
 * ```
 */
export function tempDirSync(prefix = "keycell-test-"): string {
  const dir = Deno.makeTempDirSync({ prefix });
  made.add(dir);
  return dir;
}
