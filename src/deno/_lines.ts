/**
 * Lines from a child process's output.
 *
 * @module
 */

/**
 * Calls `onLine` with each line of `stream` as it arrives (without its newline), and with what
 * follows the last newline once the stream ends. Settles when the stream ends; rejects if it fails.
 *
 * @example
 * ```ts
 * import { pumpLines } from "./_lines.ts";
 *
 * const child = new Deno.Command("echo", { args: ["one\ntwo"], stdout: "piped" }).spawn();
 * const lines: string[] = [];
 * await pumpLines(child.stdout, (line) => lines.push(line)); // lines: ["one", "two"]
 * ```
 */
export async function pumpLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + text).split("\n");
    rest = lines.pop()!;
    for (const line of lines) onLine(line);
  }
  if (rest !== "") onLine(rest);
}
