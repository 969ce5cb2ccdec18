/**
 * The `process` signer mode: the sealed-key service (store and guests) runs in a separate OS
 * process, the Keyless key server (`src/main.ts keyserver`), and `serve` calls it through the
 * key-service RPC (`src/core/key_service_rpc.ts`) over the key server's Unix socket. The host
 * process never reads a key file, never opens the store and never holds a key byte.
 *
 * Each RPC request travels as the payload of a keycell-private Keyless opcode
 * (`KEYCELL_KEY_SERVICE`, 0xC0), which the key server accepts only on its Unix socket. Requests
 * are multiplexed on one connection. Following the operators' lesson for loopback: a short
 * connect timeout (250 ms), a longer request timeout (key generation, the RSA-4096 wrapping
 * key's included, a longer one still), and no retries; a request that fails for the transport's
 * sake is `signer_unavailable` (HTTP 503).
 *
 * When nothing listens on the socket (or always, with `takeOver`: an upgrade), this side starts a
 * key server as a child process with the same keys directory and waits for it; it stops that
 * child on close. A child started here also exits when this process goes away (its stdin
 * closes). When that child dies (kill -9), the requests it had fail; the next one waits for a
 * new child rather than fail too.
 *
 * @module
 */

import type { KeyFileReport } from "../core/protocol.ts";
import { Method, RemoteKeyService } from "../core/key_service_rpc.ts";
import { KeylessClient } from "../keyless/client.ts";
import { Opcode } from "../keyless/codec.ts";
import { formatLogRecord, parseLogLine, relayLogRecord } from "../core/log.ts";
import { pumpLines } from "./_lines.ts";

/** Where the key server is and how to start one. */
export interface ProcessOptions {
  /** The key server's Unix socket. Default: a fresh private temp directory (and always a new child). */
  socketPath?: string;
  /** An opt-in directory of plaintext key files a started key server imports into its sealed store. */
  keysDir?: string;
  /** The guest module a started key server loads (default: its own default). */
  wasmPath?: string;
  /** The data directory (master key, key store) a started key server uses. Default: the private temp directory when `socketPath` is not given. */
  dataDir?: string;
  /** Default 250 ms. */
  connectTimeoutMs?: number;
  /** For every operation but key generation. Default 10 s. */
  requestTimeoutMs?: number;
  /**
   * For key generation, the wrapping key's included (RSA-4096 in wasm takes seconds), and for
   * wrapped import, which makes the wrapping key when none exists yet. Default 120 s.
   */
  generateTimeoutMs?: number;
  /** How long a started key server may take to be ready. Default 30 s. */
  startTimeoutMs?: number;
  /**
   * Start a key server of its own even when one answers on the socket, and let it take the socket
   * over (KEYCELL_REUSE_PORT=1: an upgrade of `serve`, whose old instance stops the key server it
   * started; the new one's keeps the path).
   */
  takeOver?: boolean;
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const READY = /keycell keyserver ready/;
/** The guest a key server's ready line names (`guest: wide`). */
const READY_GUEST = /\bguest: ([^,()]*[^,() ](?: \([^)]*\))?)/;
/**
 * The started key server's `deno run` flags: its task's in deno.json, V8's wide arithmetic
 * included, so it can run the wide guest when KEYCELL_GUEST asks for it, and `--unstable-net`,
 * which SO_REUSEPORT (KEYCELL_REUSE_PORT) needs.
 */
const KEYSERVER_FLAGS = [
  "--unstable-worker-options",
  "--unstable-net",
  "--v8-flags=--experimental-wasm-wide-arithmetic",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net",
  // KEYCELL_ENGINE=wasmtime runs each guest in a child process.
  "--allow-run",
];

/**
 * How to start a key server: `deno run <the keyserver task's flags> src/main.ts keyserver` (its
 * permissions and V8's wide arithmetic), or, from a binary made by `deno compile`
 * (`Deno.build.standalone`), the binary itself with `keyserver`: its entry point, permissions
 * and V8 flags are built in, and it takes no `run`.
 *
 * @example
 * ```ts
 * import { keyserverCommand } from "./process_transport.ts";
 *
 * const { command, args } = keyserverCommand({ standalone: Deno.build.standalone, execPath: Deno.execPath() });
 * console.log(command, args.at(-1)); // ".../deno keyserver", or "/usr/local/bin/keycell keyserver"
 * ```
 */
export function keyserverCommand(runtime: { standalone: boolean; execPath: string }): { command: string; args: string[] } {
  if (runtime.standalone) return { command: runtime.execPath, args: ["keyserver"] };
  return { command: runtime.execPath, args: ["run", ...KEYSERVER_FLAGS, MAIN, "keyserver"] };
}

/** A key server this side started. */
interface Child {
  process: Deno.ChildProcess;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  /** The last lines it printed, for error messages. */
  tail: string[];
  pumped: Promise<unknown>;
  exited: boolean;
}

/** The RPC methods that may make an RSA-4096 key, and so get the generation deadline. */
const GENERATING = new Set<number>([Method.GENERATE, Method.WRAPPING_KEY, Method.IMPORT_WRAPPED]);

/**
 * The key server's sealed-key service, called over its Unix socket: the HTTP app's signer and
 * sealed keys in `process` mode.
 *
 * @example
 * ```ts
 * import { ProcessKeyService } from "./process_transport.ts";
 *
 * // Connects to the key server on that socket, or starts one there.
 * async function connect(): Promise<ProcessKeyService> {
 *   return await ProcessKeyService.start({ socketPath: ".keycell/keyserver.sock", keysDir: ".keycell/keys" });
 * }
 * ```
 */
export class ProcessKeyService extends RemoteKeyService {
  readonly #link: KeyServerLink;

  private constructor(link: KeyServerLink) {
    super((request) => link.call(request), () => link.close(), "process");
    this.#link = link;
  }

  /**
   * Connects to the key server on the socket, starting one when none answers there, and reads its
   * key-file report. Throws when no key server can be reached or started.
   */
  static async start(options: ProcessOptions = {}): Promise<ProcessKeyService> {
    return new ProcessKeyService(await KeyServerLink.start(options));
  }

  /** What loading the key directory did, as the key server reported it. */
  get keyFiles(): readonly KeyFileReport[] {
    return this.#link.keyFiles;
  }

  /** Whether this service started the key server it talks to. */
  get startedKeyServer(): boolean {
    return this.#link.startedKeyServer;
  }

  get keyServerPid(): number | undefined {
    return this.#link.keyServerPid;
  }

  /** The guest the started key server's ready line named (`wide`, `baseline`, ...), if this service started it. */
  get keyServerGuest(): string | undefined {
    return this.#link.keyServerGuest;
  }
}

/** The connection to a key server, and the child process when this side started it. */
class KeyServerLink {
  readonly #options: ProcessOptions;
  readonly #socketPath: string;
  readonly #ownedDir?: string;
  #client?: KeylessClient;
  #connecting?: Promise<KeylessClient>;
  #child?: Child;
  #closed = false;
  keyFiles: readonly KeyFileReport[] = [];
  /** The guest the started key server's ready line named, if this side started it. */
  keyServerGuest?: string;
  get startedKeyServer(): boolean {
    return this.#child !== undefined;
  }
  get keyServerPid(): number | undefined {
    return this.#child?.process.pid;
  }

  private constructor(options: ProcessOptions, socketPath: string, ownedDir?: string) {
    this.#options = options;
    this.#socketPath = socketPath;
    this.#ownedDir = ownedDir;
  }

  static async start(options: ProcessOptions): Promise<KeyServerLink> {
    let ownedDir: string | undefined;
    let socketPath = options.socketPath;
    if (socketPath === undefined) {
      ownedDir = await Deno.makeTempDir({ prefix: "keycell-keyserver-" });
      socketPath = `${ownedDir}/keyserver.sock`;
    }
    const link = new KeyServerLink(options, socketPath, ownedDir);
    try {
      let client: KeylessClient;
      try {
        if (options.takeOver) throw new Error("a key server of its own");
        client = await link.#connect();
      } catch {
        await link.#spawn();
        client = await link.#connect();
      }
      link.#client = client;
      const files = await client.request({ opcode: Opcode.KEYCELL_KEY_FILES }, link.#requestTimeout());
      if (files.kind === "ok") link.keyFiles = JSON.parse(new TextDecoder().decode(files.payload));
    } catch (err) {
      await link.close();
      throw err;
    }
    return link;
  }

  /**
   * Carries one RPC request and resolves with its response. Rejects when the key server cannot
   * answer (not reachable, timed out, the connection closed): the caller's `signer_unavailable`.
   * No retry: a timeout over loopback means overload.
   */
  async call(request: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) throw new Error("closed");
    const client = await this.#connection();
    const timeout = GENERATING.has(request[0]) ? this.#options.generateTimeoutMs ?? 120_000 : this.#requestTimeout();
    const res = await client.request({ opcode: Opcode.KEYCELL_KEY_SERVICE, payload: request }, timeout);
    // An 0xFF answer means the key server refused the carrier itself: no answer from the service.
    if (res.kind !== "ok" || res.payload.length === 0) throw new Error("the key server refused the request");
    return res.payload.slice();
  }

  /** Closes the connection; stops the key server if this side started it. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#client?.close();
    this.#client = undefined;
    await this.#stopChild();
    if (this.#ownedDir !== undefined) await Deno.remove(this.#ownedDir, { recursive: true }).catch(() => {});
  }

  #requestTimeout(): number {
    return this.#options.requestTimeoutMs ?? 10_000;
  }

  #connect(): Promise<KeylessClient> {
    return KeylessClient.connect({ transport: "unix", path: this.#socketPath }, this.#options.connectTimeoutMs ?? 250);
  }

  /** The open connection, or one new connection attempt (restarting a child of ours that died). */
  #connection(): Promise<KeylessClient> {
    if (this.#client !== undefined && !this.#client.isClosed) return Promise.resolve(this.#client);
    this.#connecting ??= (async () => {
      try {
        // A child of ours killed a moment ago closes its connection before its exit is seen, and
        // its socket may still take a connection: wait for the exit, so that the next request goes
        // to a new key server rather than to the dying one. Our child closes no connection else.
        if (this.#client !== undefined && this.#child !== undefined && !this.#child.exited) await exitsWithin(this.#child.process, 1_000);
        if (this.#child?.exited) {
          await this.#stopChild();
          await this.#spawn();
        }
        const client = await this.#connect();
        if (this.#closed) {
          client.close();
          throw new Error("closed");
        }
        this.#client = client;
        return client;
      } finally {
        this.#connecting = undefined;
      }
    })();
    return this.#connecting;
  }

  async #spawn(): Promise<void> {
    const env: Record<string, string> = {
      KEYCELL_KEYSERVER_SOCKET: this.#socketPath,
      // A key server started for one host serves it alone: no TCP listener, one process.
      KEYCELL_KEYSERVER_LISTEN: "off",
      KEYCELL_KEYSERVER_PROCESSES: "1",
      KEYCELL_KEYSERVER_EXIT_WITH_PARENT: "1",
      KEYCELL_REUSE_PORT: this.#options.takeOver ? "1" : "0",
      // Every record as JSON, whatever this process's log says: the ready line is read from it,
      // and each record is logged again here, where this process's level and format apply.
      KEYCELL_LOG_LEVEL: "debug",
      KEYCELL_LOG_FORMAT: "json",
      NO_COLOR: "1",
    };
    if (this.#options.keysDir !== undefined) env.KEYCELL_KEYS_DIR = this.#options.keysDir;
    if (this.#options.wasmPath !== undefined) env.KEYCELL_WASM = this.#options.wasmPath;
    const dataDir = this.#options.dataDir ?? this.#ownedDir;
    if (dataDir !== undefined) env.KEYCELL_DATA_DIR = dataDir;
    const { command, args } = keyserverCommand({ standalone: Deno.build.standalone, execPath: Deno.execPath() });
    const process = new Deno.Command(command, {
      args,
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const tail: string[] = [];
    let onLine: ((line: string) => void) | undefined;
    const pump = (stream: ReadableStream<Uint8Array>) =>
      pumpLines(stream, (line) => {
        const record = parseLogLine(line);
        const text = record === undefined ? line : formatLogRecord(record, "text");
        tail.push(text);
        if (tail.length > 50) tail.shift();
        // The key server's own notices (a new master key to back up, keys it skipped) are the operator's.
        if (record !== undefined) relayLogRecord(record);
        onLine?.(text);
      });
    const child: Child = {
      process,
      stdin: process.stdin.getWriter(),
      tail,
      pumped: Promise.allSettled([pump(process.stdout), pump(process.stderr)]),
      exited: false,
    };
    process.status.then(() => (child.exited = true));
    this.#child = child;
    const timeoutMs = this.#options.startTimeoutMs ?? 30_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        onLine = (line) => {
          if (!READY.test(line)) return;
          this.keyServerGuest = READY_GUEST.exec(line)?.[1];
          resolve();
        };
        timer = setTimeout(() => reject(new Error(`the key server was not ready within ${timeoutMs} ms`)), timeoutMs);
        process.status.then(({ code }) => reject(new Error(`the key server exited with ${code}`)));
      });
    } catch (err) {
      throw new Error(`${(err as Error).message}:\n${tail.join("\n")}`);
    } finally {
      clearTimeout(timer);
      onLine = undefined;
    }
  }

  async #stopChild(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    await child.stdin.close().catch(() => {});
    try {
      child.process.kill("SIGTERM");
    } catch {
      // already exited
    }
    await child.process.status;
    await child.pumped;
  }
}

/** Whether `process` exits within `ms`. */
async function exitsWithin(process: Deno.ChildProcess, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  const exited = await Promise.race([process.status.then(() => true as const), late]);
  clearTimeout(timer);
  return exited;
}
