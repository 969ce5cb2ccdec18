/**
 * `KEYCELL_KEYSERVER_PROCESSES=N`: the key server as N processes that share its TCP (or TLS)
 * address with SO_REUSEPORT, each signing with one guest in its own isolate, so that no signature
 * crosses a thread. The kernel spreads connections over them (a connection stays with one), so
 * this pays where many clients connect, as TLS terminators do; one pipelining client is served by
 * one process.
 *
 * A guest behind a thread boundary costs every signature two wake-ups (the guest's thread, then
 * the thread holding the connection) and a write of its own: for P-256 on a 2-core machine, a key
 * server with a guest per core spent about 1.5x the CPU of the guest called directly, where one
 * with its guest in its own isolate spent about 1.17x (bench/KEYSERVER.md).
 *
 * This process starts the others, passes on their log records and audit lines, serves their
 * metrics together (each series labelled with its `process`), restarts one that dies, and stops
 * them all on SIGTERM or SIGINT. The first one started also serves the Unix socket; it is started
 * alone, so that it is the one that makes the master key on a first start, and the others take
 * the address it was given (a port of 0 becomes the port it got).
 *
 * @module
 */

import { getLog, parseLogLine, relayLogRecord } from "../core/log.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../core/metrics_registry.ts";
import type { KeyserverConfig } from "./config.ts";
import { keyserverCommand } from "./process_transport.ts";
import { hostPort, serveMetrics } from "./_metrics_listener.ts";
import { pumpLines } from "./_lines.ts";

const log = getLog("keyserver");

/** The ready record a key server logs: its message starts so, its fields say the rest. */
const READY = /^ready on /;
/** How long a process may take to start before the start fails. */
const START_TIMEOUT_MS = 120_000;
/** Restarts of a process that died come no sooner than this after the last one... */
const RESTART_MIN_MS = 100;
/** ...and, while it keeps dying, back off to this. */
const RESTART_MAX_MS = 5_000;

/** What a started process said in its ready record. */
interface Ready {
  listeners: string[];
  keys: number;
  guest: string;
}

/** One of the key server processes. */
interface Member {
  index: number;
  process: Deno.ChildProcess;
  ready: Promise<Ready>;
  /** Its metrics listener, once it is ready (when metrics are on). */
  metricsUrl?: string;
  exited: Promise<Deno.CommandStatus>;
}

/**
 * Runs the key server as `count` processes until SIGTERM or SIGINT; exits 0 when every one of
 * them stopped cleanly, 1 otherwise.
 *
 * @example
 * ```ts
 * import { superviseKeyservers } from "./keyserver_processes.ts";
 * import { loadKeyserverConfig } from "./config.ts";
 *
 * if (Deno.env.get("KEYCELL_KEYSERVER_PROCESSES") === "2") {
 *   await superviseKeyservers(2, loadKeyserverConfig((name) => Deno.env.get(name)));
 * }
 * ```
 */
export async function superviseKeyservers(count: number, ks: KeyserverConfig): Promise<never> {
  if (ks.tcp === undefined) {
    throw new Error("KEYCELL_KEYSERVER_PROCESSES shares the TCP listener between processes; it needs KEYCELL_KEYSERVER_LISTEN");
  }
  const env: Record<string, string> = {
    KEYCELL_KEYSERVER_PROCESSES: "1",
    // One guest in each process's own isolate: that is what the processes are for.
    KEYCELL_SIGNER: "inline",
    KEYCELL_REUSE_PORT: "1",
    KEYCELL_KEYSERVER_EXIT_WITH_PARENT: "1",
    KEYCELL_KEYSERVER_MAX_CONNECTIONS: String(Math.ceil(ks.maxConnections / count)),
    // Each serves its own metrics on loopback; this process serves them together.
    KEYCELL_KEYSERVER_METRICS_LISTEN: ks.metrics === undefined ? "off" : "127.0.0.1:0",
    // Records come back as JSON and are logged again here, where this process's level and format apply.
    KEYCELL_LOG_LEVEL: "debug",
    KEYCELL_LOG_FORMAT: "json",
    NO_COLOR: "1",
  };
  let stopping = false;
  const members: Member[] = [];
  const start = (index: number): Member => {
    const { command, args } = keyserverCommand({ standalone: Deno.build.standalone, execPath: Deno.execPath() });
    const process = new Deno.Command(command, {
      args,
      env: { ...env, KEYCELL_KEYSERVER_PROCESS: String(index) },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let readied!: (ready: Ready) => void;
    let failed!: (err: Error) => void;
    const ready = new Promise<Ready>((resolve, reject) => [readied, failed] = [resolve, reject]);
    const member: Member = { index, process, ready, exited: process.status };
    const onRecord = (line: string, raw: WritableStreamDefaultWriter<Uint8Array> | undefined) => {
      const record = parseLogLine(line);
      if (record === undefined) {
        // An audit line (KEYCELL_KEYSERVER_AUDIT_LOG=-), passed on whole.
        void raw?.write(new TextEncoder().encode(line + "\n"));
        return;
      }
      if (READY.test(String(record.rawMessage))) {
        const fields = record.properties as Partial<Ready>;
        const metrics = fields.listeners?.find((l) => l.startsWith("metrics:"));
        member.metricsUrl = metrics?.slice("metrics:".length);
        readied({ listeners: fields.listeners ?? [], keys: fields.keys ?? 0, guest: fields.guest ?? "" });
        return;
      }
      const message = `process ${index}: ${record.rawMessage}`;
      relayLogRecord({ ...record, message: [message], rawMessage: message, properties: { ...record.properties, process: index } });
    };
    void pumpLines(process.stdout, (line) => onRecord(line, stdout));
    void pumpLines(process.stderr, (line) => onRecord(line, undefined));
    const timer = setTimeout(() => failed(new Error(`key server process ${index} was not ready within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
    ready.finally(() => clearTimeout(timer)).catch(() => {});
    process.status.then(({ code }) => failed(new Error(`key server process ${index} exited with ${code} before it was ready`)));
    return member;
  };
  const stdout = Deno.stdout.writable.getWriter();

  // The first alone: it makes the master key on a first start, and its port is everyone's.
  members.push(start(0));
  const first = await members[0].ready.catch((err) => cannotStart(err, members));
  const shared = first.listeners.find((l) => /^(tcp|tls):/.test(l))!.replace(/^(tcp|tls):/, "").replace(/ .*$/, "");
  env.KEYCELL_KEYSERVER_LISTEN = shared;
  for (let i = 1; i < count; i++) members.push(start(i));
  await Promise.all(members.map((m) => m.ready)).catch((err) => cannotStart(err, members));

  // A process that dies is started again, with a growing delay while it keeps dying.
  const watch = (member: Member, delay: number) => {
    member.exited.then(async ({ code, signal }) => {
      if (stopping) return;
      log.error(`key server process ${member.index} (pid ${member.process.pid}) exited (${signal ?? code}); starting it again`, {
        process: member.index,
        code,
        signal,
      });
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (stopping) return;
      const next = start(member.index);
      members[member.index] = next;
      const up = await next.ready.then(() => true, (err) => (log.error((err as Error).message), false));
      watch(next, up ? RESTART_MIN_MS : Math.min(delay * 2, RESTART_MAX_MS));
    });
  };
  for (const m of members) watch(m, RESTART_MIN_MS);

  const metricsServer = ks.metrics === undefined ? undefined : await serveMetrics(ks.metrics, () => mergedMetrics(members), PROMETHEUS_CONTENT_TYPE);
  const listeners = [...first.listeners.filter((l) => !l.startsWith("metrics:"))];
  if (metricsServer !== undefined) listeners.push(`metrics:http://${hostPort(metricsServer.addr.hostname, metricsServer.addr.port)}/metrics`);

  let stopped!: () => void;
  const done = new Promise<void>((resolve) => stopped = resolve);
  const stop = () => {
    if (stopping) return;
    stopping = true;
    // Each drains as a key server does on SIGTERM, within KEYCELL_DRAIN_MS.
    for (const m of members) signal(m.process, "SIGTERM");
    stopped();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  // Audit log rotation: each process reopens its file.
  Deno.addSignalListener("SIGHUP", () => members.forEach((m) => signal(m.process, "SIGHUP")));
  log.info(`ready on ${listeners.join(", ")} (keys: ${first.keys}, ${first.guest}) with ${count} processes of 1 guest each, at most ${ks.maxConnections} connections`, {
    listeners,
    keys: first.keys,
    guest: first.guest,
    processes: count,
    maxConnections: ks.maxConnections,
  });
  await done;
  const statuses = await Promise.all(members.map((m) => m.exited));
  await metricsServer?.server.shutdown();
  Deno.exit(statuses.every((s) => s.success) ? 0 : 1);
}

/** Stops the processes already started and ends this one, saying why. */
function cannotStart(err: Error, members: Member[]): never {
  for (const m of members) signal(m.process, "SIGKILL");
  log.error(`cannot start: ${err.message}`);
  Deno.exit(1);
}

function signal(process: Deno.ChildProcess, name: Deno.Signal): void {
  try {
    process.kill(name);
  } catch {
    // already exited
  }
}

/** Every process's metrics as one exposition ({@linkcode mergeMetrics}); a process that does not answer is left out. */
async function mergedMetrics(members: readonly Member[]): Promise<string> {
  const texts = await Promise.all(members.map(async (m) => {
    if (m.metricsUrl === undefined) return undefined;
    try {
      const res = await fetch(m.metricsUrl, { signal: AbortSignal.timeout(5_000) });
      return res.ok ? { process: m.index, text: await res.text() } : undefined;
    } catch {
      return undefined;
    }
  }));
  return mergeMetrics(texts.filter((t) => t !== undefined));
}

/**
 * Prometheus text from several processes as one exposition: each family's `# HELP` and `# TYPE`
 * once, then its samples from every process with a `process` label added.
 *
 * @example
 * ```ts
 * import { mergeMetrics } from "./keyserver_processes.ts";
 *
 * const text = "# HELP up Up\n# TYPE up gauge\nup 1\n";
 * mergeMetrics([{ process: 0, text }, { process: 1, text }]);
 * // "# HELP up Up\n# TYPE up gauge\nup{process=\"0\"} 1\nup{process=\"1\"} 1\n"
 * ```
 */
export function mergeMetrics(texts: readonly { process: number; text: string }[]): string {
  const families = new Map<string, { head: string[]; samples: string[] }>();
  for (const { process, text } of texts) {
    let family: { head: string[]; samples: string[] } | undefined;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const comment = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (comment !== null) {
        family = families.get(comment[2]);
        if (family === undefined) families.set(comment[2], family = { head: [], samples: [] });
        if (family.head.length < 2 && !family.head.some((h) => h.startsWith(`# ${comment[1]} `))) family.head.push(line);
        continue;
      }
      if (line.startsWith("#") || family === undefined) continue;
      const label = `process="${process}"`;
      const brace = line.indexOf("{");
      const space = line.indexOf(" ");
      family.samples.push(
        brace !== -1 && brace < space
          ? `${line.slice(0, brace + 1)}${label}${line[brace + 1] === "}" ? "" : ","}${line.slice(brace + 1)}`
          : `${line.slice(0, space)}{${label}}${line.slice(space)}`,
      );
    }
  }
  return [...families.values()].map((f) => [...f.head, ...f.samples].join("\n") + "\n").join("");
}
