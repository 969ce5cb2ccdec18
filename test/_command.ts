/**
 * Runs keycell's commands as users run them: `deno run` on src/main.ts with the permissions its
 * task in deno.json grants, so a command that needs more than its task allows fails here too.
 * Either to completion ({@linkcode runKeycell}), or until it prints its ready line
 * ({@linkcode startKeycell}, {@linkcode startServer}, {@linkcode startKeyserverWithKey}); and any
 * other Deno program the same way
 * ({@linkcode startDeno}). The child's PID is the program's own, for the memory scans.
 *
 * @module
 */

import { type FixtureKey, makeKeys } from "./_fixtures.ts";
import { tempDir } from "./_temp.ts";

const DENO = Deno.execPath();
const ROOT = new URL("..", import.meta.url);
const MAIN = new URL("src/main.ts", ROOT).pathname;

/** keycell's commands. */
export type KeycellCommand = "serve" | "keyserver" | "import-key" | "rotate-master-key";

/**
 * The `deno run` flags of a command's task in deno.json (`"serve": "deno run --allow-read ...
 * src/main.ts serve"`).
 *
 * @example
 * ```ts
 * import { permissionsOf } from "./_command.ts";
 *
 * permissionsOf("import-key"); // ["--allow-read", "--allow-env", "--allow-net"]
 * ```
 */
export function permissionsOf(command: KeycellCommand): string[] {
  const tasks: Record<string, string> = JSON.parse(Deno.readTextFileSync(new URL("deno.json", ROOT))).tasks;
  const words = tasks[command]?.split(/\s+/) ?? [];
  const run = words.indexOf("run");
  const main = words.indexOf("src/main.ts");
  if (run < 0 || main < run || words[main + 1] !== command) throw new Error(`deno.json has no "deno run ... src/main.ts ${command}" task`);
  return words.slice(run + 1, main);
}

/** What a finished command did. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout, then stderr: for messages and for assertions that do not care which. */
  output: string;
}

/**
 * Runs `keycell <command> <args>` to completion with `env` (and `NO_COLOR`), stdin closed. A
 * command still running after `timeoutMs` (default 60 s) is killed, so one that was meant to
 * refuse to start cannot hang the run.
 *
 * @example
 * ```ts
 * import { runKeycell } from "./_command.ts";
 *
 * async function rotate(dataDir: string): Promise<void> {
 *   const { code, output } = await runKeycell("rotate-master-key", { env: { KEYCELL_DATA_DIR: dataDir } });
 *   if (code !== 0) throw new Error(output);
 * }
 * ```
 */
export async function runKeycell(
  command: KeycellCommand,
  options: { args?: string[]; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CommandResult> {
  const out = await new Deno.Command(DENO, {
    args: ["run", ...permissionsOf(command), MAIN, command, ...options.args ?? []],
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  return { code: out.code, stdout, stderr, output: stdout + stderr };
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

/** A running server. */
export interface RunningServer extends RunningProcess {
  /** Base URL, e.g. `http://127.0.0.1:40123`. */
  url: string;
}

/**
 * Runs `deno run <args>` and waits for a line matching `ready`; a process that exits or stays
 * silent for `timeoutMs` (default 30 s) first is stopped and rejects with what it printed.
 *
 * @example
 * ```ts
 * import { startDeno } from "./_command.ts";
 *
 * async function startControl(pem: string, der: string) {
 *   return await startDeno({ args: ["--allow-read", "test/_leaky_control.ts", pem, der], ready: /control ready/ });
 * }
 * ```
 */
export async function startDeno(options: {
  args: string[];
  ready: RegExp;
  env?: Record<string, string>;
  inspect?: boolean;
  timeoutMs?: number;
  /** The process's limit of open files (soft and hard), to run it short of descriptors. */
  openFiles?: number;
}): Promise<RunningProcess> {
  const inspect = options.inspect ? ["--inspect=127.0.0.1:0"] : [];
  return await startProgram({ ...options, program: DENO, args: ["run", ...inspect, ...options.args] });
}

/**
 * Runs any program (a binary made by `deno compile`, say) and waits for a line matching `ready`,
 * as {@linkcode startDeno} does.
 *
 * @example
 * ```ts
 * import { startProgram } from "./_command.ts";
 *
 * async function serveCompiled(binary: string, dataDir: string) {
 *   return await startProgram({
 *     program: binary,
 *     args: ["serve"],
 *     env: { KEYCELL_DATA_DIR: dataDir, KEYCELL_LISTEN: "127.0.0.1:0" },
 *     ready: /keycell ready on (http:\/\/\S+)/,
 *   });
 * }
 * ```
 */
export async function startProgram(options: {
  program: string;
  args: string[];
  ready: RegExp;
  env?: Record<string, string>;
  timeoutMs?: number;
  /** The process's limit of open files (soft and hard), to run it short of descriptors. */
  openFiles?: number;
}): Promise<RunningProcess> {
  const { program, args } = options;
  // `sh` sets the limit and then becomes the program, so the pid is the program's.
  const limited = options.openFiles === undefined ? undefined : ["-c", `ulimit -n ${options.openFiles} && exec "$0" "$@"`, program];
  const child = new Deno.Command(limited ? "sh" : program, {
    args: limited ? [...limited, ...args] : args,
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
 * Starts `keycell <command>` with its task's permissions and waits for a line matching `ready`.
 *
 * @example
 * ```ts
 * import { startKeycell } from "./_command.ts";
 *
 * async function startKeyserver(dataDir: string) {
 *   const keyserver = await startKeycell("keyserver", { env: { KEYCELL_DATA_DIR: dataDir }, ready: /ready on unix:(\S+)/ });
 *   return keyserver.ready[1]; // the socket path
 * }
 * ```
 */
export async function startKeycell(
  command: KeycellCommand,
  options: { args?: string[]; ready: RegExp; env?: Record<string, string>; inspect?: boolean; timeoutMs?: number; openFiles?: number },
): Promise<RunningProcess> {
  return await startDeno({ ...options, args: [...permissionsOf(command), MAIN, command, ...options.args ?? []] });
}

/** What {@linkcode startKeyserverWithKey} started. */
export interface KeyserverWithKey {
  keyserver: RunningProcess;
  /** Its directory: `keys/` holds the key file, `data/` is its data directory; removed at unload. */
  root: string;
  key: FixtureKey;
}

/**
 * Starts `keycell keyserver` over a fresh directory holding one fixture P-256 key (its
 * KEYCELL_KEYS_DIR), Keyless on a free loopback TCP port unless `env` says otherwise; `ready`
 * matches its ready line. `env` may be made from the directory, for settings that name files in it.
 *
 * @example
 * ```ts
 * import { startKeyserverWithKey } from "./_command.ts";
 *
 * async function port(): Promise<number> {
 *   const { keyserver } = await startKeyserverWithKey({ ready: /ready on .*tcp:127\.0\.0\.1:(\d+)/ });
 *   return Number(keyserver.ready[1]);
 * }
 * ```
 */
export async function startKeyserverWithKey(
  options: {
    ready: RegExp;
    env?: Record<string, string> | ((root: string) => Record<string, string> | Promise<Record<string, string>>);
    prefix?: string;
  },
): Promise<KeyserverWithKey> {
  const root = await tempDir(options.prefix ?? "keycell-keyserver-");
  const [key] = await makeKeys(root, ["ECC_NIST_P256"]);
  const env = typeof options.env === "function" ? await options.env(root) : options.env;
  const keyserver = await startKeycell("keyserver", {
    env: { KEYCELL_DATA_DIR: `${root}/data`, KEYCELL_KEYS_DIR: `${root}/keys`, KEYCELL_KEYSERVER_LISTEN: "127.0.0.1:0", ...env },
    ready: options.ready,
  });
  return { keyserver, root, key };
}

/**
 * Starts `keycell serve` with its data in `dataDir`, listening on a free loopback port.
 *
 * @example
 * ```ts
 * import { startServer } from "./_command.ts";
 *
 * async function healthy(dataDir: string): Promise<boolean> {
 *   const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
 *   try {
 *     return (await fetch(`${server.url}/healthz`)).ok;
 *   } finally {
 *     await server.stop();
 *   }
 * }
 * ```
 */
export async function startServer(
  options: { dataDir: string; env?: Record<string, string>; inspect?: boolean; timeoutMs?: number; openFiles?: number },
): Promise<RunningServer> {
  const running = await startKeycell("serve", {
    ready: /keycell ready on (http:\/\/\S+)/,
    env: { KEYCELL_DATA_DIR: options.dataDir, KEYCELL_LISTEN: "127.0.0.1:0", ...options.env },
    inspect: options.inspect,
    timeoutMs: options.timeoutMs,
    openFiles: options.openFiles,
  });
  return { ...running, url: running.ready[1] };
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

/**
 * The child processes of `pid`, from /proc.
 *
 * @example
 * ```ts
 * import { childrenOf } from "./_command.ts";
 *
 * childrenOf(Deno.pid).length >= 0; // true
 * ```
 */
export function childrenOf(pid: number): number[] {
  return Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/).filter(Boolean).map(Number);
}

/**
 * Whether process `pid` still exists (a zombie not yet reaped counts).
 *
 * @example
 * ```ts
 * import { alive } from "./_command.ts";
 *
 * alive(Deno.pid); // true
 * ```
 */
export function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * The wasmtime host processes (KEYCELL_ENGINE=wasmtime) among `pid`'s children, started from any
 * of its threads.
 *
 * @example
 * ```ts
 * import { wasmtimeChildren } from "./_command.ts";
 *
 * wasmtimeChildren(Deno.pid); // [] unless this process runs wasmtime guests
 * ```
 */
export function wasmtimeChildren(pid: number): number[] {
  return childrenOfEveryThread(pid)
    .filter((child) => Deno.readTextFileSync(`/proc/${child}/cmdline`).split("\0")[0].endsWith("keycell-wasmtime-host"));
}

/**
 * The key server processes among `pid`'s children (a key server `serve` started in `process` mode,
 * or those of KEYCELL_KEYSERVER_PROCESSES): the ones whose command line says `keyserver`.
 *
 * @example
 * ```ts
 * import { keyserverChildren } from "./_command.ts";
 *
 * keyserverChildren(Deno.pid); // [] unless this process started key servers
 * ```
 */
export function keyserverChildren(pid: number): number[] {
  return childrenOfEveryThread(pid).filter((child) => {
    try {
      return Deno.readTextFileSync(`/proc/${child}/cmdline`).split("\0").includes("keyserver");
    } catch {
      return false; // ended while it was read
    }
  });
}

/**
 * The children of process `pid` started from any of its threads (a Worker's thread included),
 * from /proc; throws when the process has ended.
 *
 * @example
 * ```ts
 * import { childrenOfEveryThread } from "./_command.ts";
 *
 * childrenOfEveryThread(Deno.pid);
 * ```
 */
export function childrenOfEveryThread(pid: number): number[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)]
    .flatMap((t) => Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`).trim().split(/\s+/))
    .filter((p) => p !== "")
    .map(Number);
}
