/**
 * Starts `keycell serve` as users do, with `deno run` directly so the PID is the server's, and
 * waits for its "ready" line; and any other Deno program the same way.
 *
 * @module
 */

import { assertEquals } from "./_assert.ts";
import { ALGORITHM_DETAILS, algorithmsFor, digestFor, type FixtureKey } from "./_fixtures.ts";

const DENO = Deno.execPath();
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;

/** A running server. */
export interface RunningServer extends RunningProcess {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  url: string;
}

/** A running child process that printed its ready line. */
export interface RunningProcess {
  pid: number;
  /** Every line the process printed so far (stdout and stderr). */
  lines: string[];
  /** The ready line's match. */
  ready: RegExpExecArray;
  /** The inspector's WebSocket URL, when started with `inspect`. */
  inspector?: string;
  /** Sends SIGTERM and waits for the exit; returns the exit code. */
  stop(): Promise<number>;
}

/**
 * Runs `deno run <args>` and waits for a line matching `ready`.
 *
 * @example
 * ```ts
 * const control = await startDeno({ args: ["--allow-read", "test/_leaky_control.ts", pem, der], ready: /control ready/ });
 * ```
 */
export async function startDeno(options: {
  args: string[];
  ready: RegExp;
  env?: Record<string, string>;
  inspect?: boolean;
  timeoutMs?: number;
}): Promise<RunningProcess> {
  const inspect = options.inspect ? ["--inspect=127.0.0.1:0"] : [];
  const child = new Deno.Command(DENO, {
    args: ["run", ...inspect, ...options.args],
    env: { NO_COLOR: "1", ...options.env },
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
  const timeoutMs = options.timeoutMs ?? 30_000;
  const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within ${timeoutMs} ms:\n${lines.join("\n")}`)), timeoutMs);
    onLine = () => {
      const match = lines.map((l) => options.ready.exec(l)).find((m) => m);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    };
    child.status.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before ready:\n${lines.join("\n")}`));
    });
  }).catch(async (err) => {
    await stop();
    throw err;
  });
  const inspector = lines.map((l) => /Debugger listening on (ws:\/\/\S+)/.exec(l)).find((m) => m)?.[1];
  return { pid: child.pid, lines, ready, inspector, stop };
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
  options: { dataDir: string; env?: Record<string, string>; inspect?: boolean; timeoutMs?: number },
): Promise<RunningServer> {
  const running = await startDeno({
    args: ["--unstable-worker-options", "--allow-read", "--allow-write", "--allow-env", "--allow-net", "--allow-run", MAIN, "serve"],
    ready: /keycell ready on (http:\/\/\S+)/,
    env: { KEYCELL_DATA_DIR: options.dataDir, KEYCELL_LISTEN: "127.0.0.1:0", ...options.env },
    inspect: options.inspect,
    timeoutMs: options.timeoutMs,
  });
  return { ...running, url: running.ready[1] };
}

/** Calls a running server's HTTP API with a bearer token; JSON bodies. */
export type Api = (method: string, path: string, body?: unknown) => Promise<Response>;

/**
 * An {@linkcode Api} for one server and token.
 *
 * @example
 * ```ts
 * const api = apiClient(server, token);
 * const res = await api("POST", "/v1/keys", { keySpec: "ECC_NIST_P256" });
 * ```
 */
export function apiClient(server: { url: string }, token: string): Api {
  return (method, path, body) =>
    fetch(`${server.url}${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
}

/**
 * Signs with every algorithm the key's spec allows, as a DIGEST and as a RAW message (ECDSA RAW in
 * r||s), asserting each answers 200.
 *
 * @example
 * ```ts
 * await signEveryWay(api, { id, keySpec: "RSA_2048" });
 * ```
 */
export async function signEveryWay(api: Api, key: Pick<FixtureKey, "id" | "keySpec">): Promise<void> {
  const message = crypto.getRandomValues(new Uint8Array(100));
  for (const algorithm of algorithmsFor(key.keySpec)) {
    const ecdsa = ALGORITHM_DETAILS[algorithm].scheme === "ECDSA";
    const bodies = [
      { algorithm, messageType: "DIGEST", message: (await digestFor(algorithm, message)).toBase64() },
      { algorithm, messageType: "RAW", message: message.toBase64(), ...(ecdsa ? { signatureFormat: "RAW" } : {}) },
    ];
    for (const body of bodies) {
      const res = await api("POST", `/v1/keys/${key.id}/sign`, body);
      assertEquals(res.status, 200, `${key.keySpec} ${algorithm} ${body.messageType}`);
      await res.body?.cancel();
    }
  }
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
