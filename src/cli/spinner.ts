/**
 * A spinner for a command that waits (an RSA-4096 key takes seconds to generate in the guest):
 * drawn on standard error only when it is a terminal, so a pipe, a file or a script reading
 * `--json` never sees a control character; and erased before the command prints its result.
 *
 * @module
 */

/** The frames, drawn in turn. */
export const SPINNER_FRAMES: readonly string[] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** Time between two frames. */
export const SPINNER_INTERVAL_MS = 80;

/** Back to the start of the line, and erase it (ECMA-48 CR and EL 2). */
export const SPINNER_CLEAR = "\r\x1b[2K";

/** Where the spinner draws: standard error, or a stand-in. */
export interface SpinnerOutput {
  isTerminal(): boolean;
  writeSync(bytes: Uint8Array): number;
}

/**
 * Resolves (or rejects) as `work` does; meanwhile, when `output` is a terminal, draws a spinner
 * and `label` on it, erased before `work`'s result is handed back. Writes nothing otherwise.
 *
 * @example
 * ```ts
 * import { withSpinner } from "./spinner.ts";
 *
 * const answer = await withSpinner("generating RSA_4096", Promise.resolve(42));
 * answer; // 42
 * ```
 */
export async function withSpinner<T>(
  label: string,
  work: Promise<T>,
  output: SpinnerOutput = Deno.stderr,
  intervalMs: number = SPINNER_INTERVAL_MS,
): Promise<T> {
  if (!output.isTerminal()) return await work;
  const encoder = new TextEncoder();
  const write = (text: string) => {
    const bytes = encoder.encode(text);
    for (let at = 0; at < bytes.length;) at += output.writeSync(bytes.subarray(at));
  };
  let frame = 0;
  const draw = () => write(`${SPINNER_CLEAR}${SPINNER_FRAMES[frame++ % SPINNER_FRAMES.length]} ${label}`);
  draw();
  const timer = setInterval(draw, intervalMs);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    write(SPINNER_CLEAR);
  }
}
