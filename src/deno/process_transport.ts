/**
 * The `process` transport: the compartment runs in a separate OS process, the Keyless key server
 * (`src/main.ts keyserver`), reached over its Unix socket. The host process never reads a key
 * file and never holds a key byte.
 *
 * Each keycell protocol request travels as the payload of a keycell-private Keyless opcode
 * (`KEYCELL_MESSAGE`, 0xC0), which the key server accepts only on its Unix socket. Requests are
 * multiplexed on one connection. Following the operators' lesson for loopback: a short connect
 * timeout (250 ms), a longer request timeout, and no retries; a request that fails for the
 * transport's sake answers `UNAVAILABLE` (HTTP 503).
 *
 * When nothing listens on the socket, the transport starts a key server as a child process with
 * the same keys directory and waits for it; it stops that child on close. A child started here
 * also exits when this process goes away (its stdin closes).
 *
 * @module
 */

import type { KeyFileReport } from "../core/protocol.ts";
import { encodeResponse, Op, Status, StoreOp } from "../core/protocol.ts";
import { KeylessClient } from "../keyless/client.ts";
import { Opcode } from "../keyless/codec.ts";
import type { Transport } from "../core/signer_client.ts";

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
  /** For key generation, the wrapping key's included (RSA-4096 in wasm takes seconds). Default 120 s. */
  generateTimeoutMs?: number;
  /** How long a started key server may take to be ready. Default 30 s. */
  startTimeoutMs?: number;
}

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const READY = /keycell keyserver ready/;
/** The guest a key server's ready line names (`guest: wide`). */
const READY_GUEST = /\bguest: (\w+(?: \([^)]*\))?)/;
/**
 * The started key server's `deno run` flags: its task's in deno.json, V8's wide arithmetic
 * included, so it can run the wide guest.
 */
const KEYSERVER_FLAGS = [
  "--unstable-worker-options",
  "--v8-flags=--experimental-wasm-wide-arithmetic",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net",
];

/** A key server this transport started. */
interface Child {
  process: Deno.ChildProcess;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  /** The last lines it printed, for error messages. */
  tail: string[];
  pumped: Promise<unknown>;
  exited: boolean;
}

/**
 * Talks to a key server process over its Unix socket.
 *
 * @example
 * ```ts
 * import { ProcessTransport } from "./process_transport.ts";
 *
 * // Connects to the key server on that socket, or starts one there.
 * async function connect(): Promise<ProcessTransport> {
 *   return await ProcessTransport.start({ socketPath: ".keycell/keyserver.sock", keysDir: ".keycell/keys" });
 * }
 * ```
 */
export class ProcessTransport implements Transport {
  readonly mode = "process";
  readonly #options: ProcessOptions;
  readonly #socketPath: string;
  readonly #ownedDir?: string;
  #client?: KeylessClient;
  #connecting?: Promise<KeylessClient>;
  #child?: Child;
  #closed = false;
  /** What loading the key directory did, as the key server reported it. */
  keyFiles: readonly KeyFileReport[] = [];
  /** Whether this transport started the key server it talks to. */
  get startedKeyServer(): boolean {
    return this.#child !== undefined;
  }
  /** The guest the started key server's ready line named (`wide`, `baseline`), if this transport started it. */
  keyServerGuest?: string;
  /** The started key server's process id, if any. */
  get keyServerPid(): number | undefined {
    return this.#child?.process.pid;
  }

  private constructor(options: ProcessOptions, socketPath: string, ownedDir?: string) {
    this.#options = options;
    this.#socketPath = socketPath;
    this.#ownedDir = ownedDir;
  }

  /**
   * Connects to the key server on the socket, starting one when none answers there, and reads its
   * key-file report. Throws when no key server can be reached or started.
   */
  static async start(options: ProcessOptions = {}): Promise<ProcessTransport> {
    let ownedDir: string | undefined;
    let socketPath = options.socketPath;
    if (socketPath === undefined) {
      ownedDir = await Deno.makeTempDir({ prefix: "keycell-keyserver-" });
      socketPath = `${ownedDir}/keyserver.sock`;
    }
    const transport = new ProcessTransport(options, socketPath, ownedDir);
    try {
      let client: KeylessClient;
      try {
        client = await transport.#connect();
      } catch {
        await transport.#spawn();
        client = await transport.#connect();
      }
      transport.#client = client;
      const files = await client.request({ opcode: Opcode.KEYCELL_KEY_FILES }, transport.#requestTimeout());
      if (files.kind === "ok") transport.keyFiles = JSON.parse(new TextDecoder().decode(files.payload));
    } catch (err) {
      await transport.close();
      throw err;
    }
    return transport;
  }

  async request(request: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) return encodeResponse(Status.UNAVAILABLE);
    let client: KeylessClient;
    try {
      client = await this.#connection();
    } catch {
      return encodeResponse(Status.UNAVAILABLE);
    }
    const generates = request[0] === Op.GENERATE || request[0] === StoreOp.WRAPPING_KEY;
    const timeout = generates ? this.#options.generateTimeoutMs ?? 120_000 : this.#requestTimeout();
    try {
      const res = await client.request({ opcode: Opcode.KEYCELL_MESSAGE, payload: request }, timeout);
      // An 0xFF answer means the key server refused the carrier itself: not the guest's answer.
      return res.kind === "ok" && res.payload.length > 0 ? res.payload.slice() : encodeResponse(Status.UNAVAILABLE);
    } catch {
      // Timed out or the connection closed: no retry (a timeout over loopback means overload).
      return encodeResponse(Status.UNAVAILABLE);
    }
  }

  /** Closes the connection; stops the key server if this transport started it. */
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
      // A key server started for one host serves it alone: no TCP listener.
      KEYCELL_KEYSERVER_LISTEN: "off",
      KEYCELL_KEYSERVER_EXIT_WITH_PARENT: "1",
      NO_COLOR: "1",
    };
    if (this.#options.keysDir !== undefined) env.KEYCELL_KEYS_DIR = this.#options.keysDir;
    if (this.#options.wasmPath !== undefined) env.KEYCELL_WASM = this.#options.wasmPath;
    const dataDir = this.#options.dataDir ?? this.#ownedDir;
    if (dataDir !== undefined) env.KEYCELL_DATA_DIR = dataDir;
    const process = new Deno.Command(Deno.execPath(), {
      args: ["run", ...KEYSERVER_FLAGS, MAIN, "keyserver"],
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const tail: string[] = [];
    let onLine: ((line: string) => void) | undefined;
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      let rest = "";
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + text).split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          tail.push(line);
          if (tail.length > 50) tail.shift();
          // The key server's own notices (a new master key to back up, keys it skipped) are the operator's.
          if (line.startsWith("keycell keyserver:")) console.log(line);
          onLine?.(line);
        }
      }
    };
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
