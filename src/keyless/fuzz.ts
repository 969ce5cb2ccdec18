/**
 * A frame fuzzer for the Keyless key server: random bytes, mutated frames, random item soups and
 * well-framed requests with random contents. It checks that every well-framed request gets its own
 * answer, that a connection whose framing was lost is closed (never left hanging), and that the
 * server still answers a ping afterwards.
 *
 * `deno task fuzz:keyless [iterations] [seed]` runs it for longer against a server of its own;
 * `server_test.ts` runs a bounded round in CI.
 *
 * @module
 */

import { encodeItems, encodeMessage, type Item, Opcode, Tag } from "./codec.ts";
import { type KeylessAddress, KeylessClient } from "./client.ts";

/** A small deterministic PRNG (mulberry32), so a failing seed can be replayed. *
 * @example
 * ```ts
 * import { prng } from "./fuzz.ts";
 *
 * const a = prng(42);
 * const b = prng(42);
 * a() === b(); // true: a seed replays its sequence
 * ```
 */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What a fuzz run did. */
export interface FuzzReport {
  cases: number;
  /** Well-framed requests sent on the long-lived connection; each was answered by id. */
  framed: number;
  /** Connections that carried unframeable bytes and were closed by the server. */
  closedByServer: number;
  /** Connections whose trailing ping was answered although they carried junk first. */
  survived: number;
}

/** Options for {@linkcode fuzzKeyless}. */
export interface FuzzOptions {
  iterations: number;
  seed: number;
  /** Known-good keys to aim at, so some requests get as far as the signer. */
  skis?: Uint8Array[];
  /** Per-case deadline for the server to answer or close. */
  timeoutMs?: number;
}

// The keycell-private opcodes are left out: on the Unix socket they reach the compartment as
// trusted requests (key generation, fault injection), and elsewhere a test checks their refusal.
const INTERESTING_OPCODES = [
  ...Object.values(Opcode).filter((op) => op !== Opcode.KEYCELL_KEY_SERVICE && op !== Opcode.KEYCELL_KEY_FILES),
  0x00,
  0x08,
  0x7f,
  0xc2,
  0xfe,
];
const INTERESTING_TAGS = [...Object.values(Tag), 0x00, 0x07, 0x18, 0x21, 0x7f, 0xff];

/**
 * Runs the fuzzer against a server; throws with the seed and case number when the server breaks
 * a promise (a framed request without its answer, a connection left hanging, no pong at the end).
 *
 * @example
 * ```ts
 * import { fuzzKeyless } from "./fuzz.ts";
 *
 * // A bounded round against a key server's socket; a failure names its seed to replay.
 * async function fuzz(path: string): Promise<void> {
 *   const report = await fuzzKeyless({ transport: "unix", path }, { iterations: 300, seed: 1 });
 *   console.log(`${report.cases} cases, ${report.framed} framed requests answered`);
 * }
 * ```
 */
export async function fuzzKeyless(address: KeylessAddress, options: FuzzOptions): Promise<FuzzReport> {
  const rand = prng(options.seed);
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const bytes = (n: number) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = int(256);
    return out;
  };
  const timeoutMs = options.timeoutMs ?? 5_000;
  const report: FuzzReport = { cases: 0, framed: 0, closedByServer: 0, survived: 0 };
  const where = (i: number) => `seed ${options.seed}, case ${i}`;

  const randomItems = (): Item[] => {
    const items: Item[] = [];
    const count = int(6);
    for (let i = 0; i < count; i++) {
      const tag = pick(INTERESTING_TAGS);
      const length = rand() < 0.7 ? pick([0, 1, 20, 32, 36, 48, 64]) : int(300);
      const data = tag === Tag.OPCODE && rand() < 0.8 ? Uint8Array.of(pick(INTERESTING_OPCODES)) : bytes(length);
      if (tag === Tag.OPCODE && data.length === 1 && (data[0] & 0xfe) === Opcode.KEYCELL_KEY_SERVICE) data[0] = 0xc2;
      items.push({ tag, data });
    }
    if (options.skis?.length && rand() < 0.5) items.push({ tag: Tag.SKI, data: pick(options.skis) });
    return items;
  };

  // Well-framed requests with random contents share one long-lived connection: each must be
  // answered under its own id, and the connection must stay open.
  const framedConn = await KeylessClient.connect(address, 1_000);
  try {
    for (let i = 0; i < options.iterations; i++) {
      report.cases++;
      const kind = rand();
      if (kind < 0.4) {
        const id = 0x10000 + i;
        const frame = encodeItems(id, randomItems(), rand() < 0.5);
        const answer = framedConn.expect(id, timeoutMs);
        await framedConn.write(frame);
        try {
          await answer;
        } catch (err) {
          throw new Error(`${where(i)}: a well-framed request got no answer: ${(err as Error).message}`);
        }
        report.framed++;
        continue;
      }
      // Everything else goes on a connection of its own, followed by a ping and end of stream.
      let junk: Uint8Array;
      if (kind < 0.6) {
        junk = bytes(rand() < 0.1 ? 64 * 1024 : int(2048));
      } else if (kind < 0.8) {
        junk = encodeMessage({ id: i, opcode: pick(INTERESTING_OPCODES), payload: bytes(int(80)), ski: bytes(20) }, rand() < 0.5);
        const flips = 1 + int(8);
        for (let f = 0; f < flips; f++) junk[int(junk.length)] = int(256);
        if (rand() < 0.3) junk = junk.subarray(0, int(junk.length));
      } else {
        const body = encodeItems(i, randomItems(), false).subarray(8);
        const header = Uint8Array.of(1, int(3), 0, 0, 0, 0, 0, i & 0xff);
        new DataView(header.buffer).setUint16(2, Math.max(0, body.length + int(21) - 10));
        junk = new Uint8Array([...header, ...body]);
      }
      const client = await KeylessClient.connect(address, 1_000);
      const pingId = 0xfffffff0;
      const pong = client.expect(pingId, timeoutMs).then(() => true, () => false);
      await client.write(junk);
      await client.write(encodeMessage({ id: pingId, opcode: Opcode.PING, payload: Uint8Array.of(1, 2, 3) }));
      await client.closeWrite();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const closed = await Promise.race([
        client.closed.then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
      ]);
      clearTimeout(timer);
      client.close();
      if (!closed) throw new Error(`${where(i)}: the server neither answered nor closed a connection after end of stream`);
      if (await pong) report.survived++;
      else report.closedByServer++;
    }
    const last = await framedConn.request({ opcode: Opcode.PING, payload: Uint8Array.of(7) }, timeoutMs);
    if (last.kind !== "pong") throw new Error(`seed ${options.seed}: the long-lived connection no longer answers pings`);
  } finally {
    framedConn.close();
  }
  const fresh = await KeylessClient.connect(address, 1_000);
  try {
    const pong = await fresh.request({ opcode: Opcode.PING }, timeoutMs);
    if (pong.kind !== "pong") throw new Error(`seed ${options.seed}: the server no longer answers pings`);
  } finally {
    fresh.close();
  }
  return report;
}
