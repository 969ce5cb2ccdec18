/**
 * Starts `keycell serve` as users do, with `deno run` directly so the PID is the server's, and
 * waits for its "ready" line.
 *
 * @module
 */

const DENO = Deno.execPath();
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;

/** A running server. */
export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  url: string;
  pid: number;
  /** Every line the server printed so far (stdout and stderr). */
  lines: string[];
  /** Sends SIGTERM and waits for the exit; returns the exit code. */
  stop(): Promise<number>;
}

/**
 * Starts a server with its data in `dataDir`, listening on a free loopback port.
 *
 * @example
 * ```ts
 * const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
 * await fetch(`${server.url}/healthz`);
 * await server.stop();
 * ```
 */
export async function startServer(
  options: { dataDir: string; env?: Record<string, string>; v8Flags?: string[]; timeoutMs?: number },
): Promise<RunningServer> {
  const v8 = options.v8Flags?.length ? [`--v8-flags=${options.v8Flags.join(",")}`] : [];
  const child = new Deno.Command(DENO, {
    args: ["run", "--unstable-worker-options", "--allow-read", "--allow-write", "--allow-env", "--allow-net", ...v8, MAIN, "serve"],
    env: { KEYCELL_DATA_DIR: options.dataDir, KEYCELL_LISTEN: "127.0.0.1:0", NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let onLine: (() => void) | undefined;
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const line of stream.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())) {
      lines.push(line);
      onLine?.();
    }
  };
  const pumped = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already exited
    }
    const { code } = await child.status;
    await pumped;
    return code;
  };
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within ${options.timeoutMs ?? 30000} ms:\n${lines.join("\n")}`)), options.timeoutMs ?? 30000);
    onLine = () => {
      const ready = lines.map((l) => /keycell ready on (http:\/\/\S+)/.exec(l)).find((m) => m);
      if (ready) {
        clearTimeout(timer);
        resolve(ready[1]);
      }
    };
    child.status.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before ready:\n${lines.join("\n")}`));
    });
  }).catch(async (err) => {
    await stop();
    throw err;
  });
  return { url, pid: child.pid, lines, stop };
}

function lineSplitter(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, controller) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) controller.enqueue(p);
    },
    flush(controller) {
      if (rest) controller.enqueue(rest);
    },
  });
}
