/**
 * Reads a whole process's memory from outside and finds where given byte patterns are.
 *
 * It reads /proc/PID/maps for the mappings, /proc/PID/pagemap to keep only pages that are present
 * (or every readable mapping, in the slower full variant), and /proc/PID/mem for the bytes, which
 * covers every thread of every isolate. Needs root, or the scanned process to be a child of this one.
 *
 * @module
 */

/** One line of /proc/PID/maps, classified. */
export interface Region {
  start: number;
  end: number;
  perms: string;
  path: string;
  kind: RegionKind;
}

/**
 * Where a byte can be:
 * - `guest`: a wasm linear memory holding the guest tag;
 * - `stack`: a thread's stack — `[stack]`, or the mapping that holds a thread's stack pointer as
 *   /proc/PID/task/TID/syscall reports it (threads blocked in a system call, as idle ones are);
 * - `v8-heap`: anonymous mappings below the kernel's top-down mmap area, where V8 places its heap
 *   pages at randomised addresses (glibc never maps there), and a V8 pointer-compression cage (a
 *   4 GiB-aligned run of anonymous mappings exactly 4 GiB long, as workerd's V8 reserves it);
 * - `native-heap`: `[heap]` and the other anonymous mappings (glibc arenas, large malloc chunks,
 *   the runtime's own allocations); also tcmalloc's page heap, which workerd uses: tcmalloc
 *   reserves its address space in 1 GiB-aligned runs of whole GiB at randomised addresses, often
 *   below the mmap area, where the rule above would call them V8's; and a program's `.bss` (the
 *   anonymous mapping right after a file-backed one);
 * - `file`: file-backed mappings.
 * Only `guest` is certain by construction; the others are for reading a failure, since a hit
 * outside guest memory fails the suite whatever its kind.
 */
export type RegionKind = "guest" | "stack" | "v8-heap" | "native-heap" | "file";

/** Below this address an anonymous mapping is V8's, not glibc's (x86_64 user space tops at 0x7fff…). */
const MMAP_AREA_START = 0x7e00_0000_0000;

/** A labelled byte sequence to look for; at least 8 bytes long. */
export interface Pattern {
  bytes: Uint8Array;
  label: string;
}

/** One place a pattern was found. */
export interface Hit {
  address: number;
  region: Region;
  label: string;
}

/** What a scan did. */
export interface ScanResult {
  hits: Hit[];
  regions: Region[];
  bytesRead: number;
  durationMs: number;
}

const PAGE = 4096;
const GIB = 1024 ** 3;
const WASM_RESERVATION = 4 * GIB;

/**
 * Parses /proc/PID/maps and marks the guest's linear memories: an anonymous rw-p mapping that holds
 * `tag`, directly followed by an anonymous ---p mapping, the two reserving at least 4 GiB together
 * (V8's guard region for a wasm memory).
 *
 * @example
 * ```ts
 * const regions = readRegions(pid, new TextEncoder().encode("keycell.guest.v1"));
 * ```
 */
export function readRegions(pid: number, tag: Uint8Array, mem?: Deno.FsFile): Region[] {
  const lines = Deno.readTextFileSync(`/proc/${pid}/maps`).trim().split("\n");
  const stackPointers = threadStackPointers(pid);
  const regions = lines.map((line): Region => {
    const [range, perms, , , inode, ...rest] = line.split(/\s+/);
    const [start, end] = range.split("-").map((h) => parseInt(h, 16));
    const path = rest.join(" ");
    let kind: RegionKind;
    if (inode !== "0") kind = "file";
    else if (path === "[stack]" || stackPointers.some((sp) => sp >= start && sp < end)) kind = "stack";
    else if (path === "" && start < MMAP_AREA_START) kind = "v8-heap";
    else kind = "native-heap";
    return { start, end, perms, path, kind };
  });
  reclassifyReservations(regions);
  const file = mem ?? Deno.openSync(`/proc/${pid}/mem`, { read: true });
  try {
    for (let i = 0; i + 1 < regions.length; i++) {
      const [r, next] = [regions[i], regions[i + 1]];
      const anonymous = (x: Region) => x.path === "" && x.kind !== "file";
      const shaped = anonymous(r) && r.perms.startsWith("rw") && anonymous(next) &&
        next.perms.startsWith("---") && next.start === r.end && next.end - r.start >= WASM_RESERVATION;
      if (shaped && containsAt(readPresent(pid, file, r), tag)) r.kind = "guest";
    }
  } finally {
    if (mem === undefined) file.close();
  }
  return regions;
}

/**
 * Corrects the address-based guess for allocators that reserve large aligned runs: a run of
 * adjacent anonymous mappings that starts on a 1 GiB boundary and spans whole GiB is tcmalloc's
 * (native), unless it is a 4 GiB-aligned run of exactly 4 GiB, V8's pointer-compression cage; an
 * anonymous mapping right after a file-backed one is that file's `.bss` (native).
 */
function reclassifyReservations(regions: Region[]): void {
  const anonymous = (r: Region) => r.kind !== "file" && r.path === "";
  for (let i = 0; i < regions.length;) {
    if (!anonymous(regions[i])) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < regions.length && anonymous(regions[j + 1]) && regions[j + 1].start === regions[j].end) j++;
    const [start, end] = [regions[i].start, regions[j].end];
    const run = regions.slice(i, j + 1);
    if (start % (4 * GIB) === 0 && end - start === 4 * GIB) {
      for (const r of run) if (r.kind !== "stack") r.kind = "v8-heap";
    } else if (start % GIB === 0 && (end - start) % GIB === 0) {
      for (const r of run) if (r.kind !== "stack") r.kind = "native-heap";
    }
    const before = regions[i - 1];
    if (before?.kind === "file" && before.end === start && regions[i].kind !== "stack") regions[i].kind = "native-heap";
    i = j + 1;
  }
}

/** The stack pointer of every thread blocked in a system call (the second-to-last field). */
function threadStackPointers(pid: number): number[] {
  const pointers: number[] = [];
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const fields = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/syscall`).trim().split(" ");
      if (fields.length >= 9) pointers.push(parseInt(fields[fields.length - 2], 16));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return pointers;
}

/**
 * Finds every occurrence of every pattern in the process.
 *
 * @example
 * ```ts
 * const { hits } = scanProcess(pid, [{ bytes: secret, label: "d be" }], tag);
 * ```
 */
export function scanProcess(
  pid: number,
  patterns: readonly Pattern[],
  tag: Uint8Array,
  options: { full?: boolean } = {},
): ScanResult {
  const started = performance.now();
  const matcher = new Matcher(patterns);
  const mem = Deno.openSync(`/proc/${pid}/mem`, { read: true });
  const hits: Hit[] = [];
  let bytesRead = 0;
  let regions: Region[];
  try {
    regions = readRegions(pid, tag, mem);
    for (const region of regions) {
      if (!region.perms.startsWith("r") || region.path === "[vvar]" || region.path === "[vsyscall]") continue;
      for (const chunk of readChunks(pid, mem, region, options.full ?? false)) {
        bytesRead += chunk.bytes.length;
        for (const { offset, label } of matcher.find(chunk.bytes)) {
          hits.push({ address: chunk.address + offset, region, label });
        }
      }
    }
  } finally {
    mem.close();
  }
  return { hits, regions, bytesRead, durationMs: performance.now() - started };
}

/**
 * The first hits, one per line, with their regions: what a failed assertion shows.
 *
 * @example
 * ```ts
 * assertEquals(outside.length, 0, describeHits(outside));
 * ```
 */
export function describeHits(hits: readonly Hit[]): string {
  return hits.slice(0, 8).map((h) =>
    `${h.label} at 0x${h.address.toString(16)} in ${h.region.kind} ${h.region.perms} ${h.region.path || "(anonymous)"} ` +
    `0x${h.region.start.toString(16)}-0x${h.region.end.toString(16)}`
  ).join("\n");
}

/**
 * Finds patterns in one buffer (a heap snapshot, say).
 *
 * @example
 * ```ts
 * const labels = scanBytes(snapshotText, patterns);
 * ```
 */
export function scanBytes(bytes: Uint8Array, patterns: readonly Pattern[]): { offset: number; label: string }[] {
  return [...new Matcher(patterns).find(bytes)];
}

/** The bytes of every mapping the scan reads, for searches of their own (a generated key's primes). */
export function* readRegionBytes(pid: number, region: Region): Generator<{ address: number; bytes: Uint8Array }> {
  const mem = Deno.openSync(`/proc/${pid}/mem`, { read: true });
  try {
    yield* readChunks(pid, mem, region, false);
  } finally {
    mem.close();
  }
}

/** Runs of present pages (or the whole mapping, for `full`), as address + bytes. */
function* readChunks(pid: number, mem: Deno.FsFile, region: Region, full: boolean): Generator<{ address: number; bytes: Uint8Array }> {
  const runs = full ? [[region.start, region.end]] : presentRuns(pid, region);
  for (const [start, end] of runs) {
    // Large runs are read in slices so one scan never holds a whole mapping twice.
    for (let at = start; at < end; at += 64 * 1024 * 1024) {
      const stop = Math.min(end, at + 64 * 1024 * 1024);
      const bytes = readAt(mem, at, stop - at);
      if (bytes !== undefined) yield { address: at, bytes };
    }
  }
}

function readPresent(pid: number, mem: Deno.FsFile, region: Region): Uint8Array[] {
  return [...readChunks(pid, mem, region, false)].map((c) => c.bytes);
}

function presentRuns(pid: number, region: Region): [number, number][] {
  const pages = (region.end - region.start) / PAGE;
  const entries = new Uint8Array(pages * 8);
  const pagemap = Deno.openSync(`/proc/${pid}/pagemap`, { read: true });
  try {
    pagemap.seekSync((region.start / PAGE) * 8, Deno.SeekMode.Start);
    let got = 0;
    while (got < entries.length) {
      const n = pagemap.readSync(entries.subarray(got));
      if (n === null || n === 0) break;
      got += n;
    }
  } finally {
    pagemap.close();
  }
  const view = new DataView(entries.buffer);
  const runs: [number, number][] = [];
  for (let i = 0; i < pages; i++) {
    // Bit 63: present in RAM; bit 62: swapped out. Either way the page holds data.
    const high = view.getUint32(i * 8 + 4, true);
    if ((high & 0xc0000000) === 0) continue;
    const address = region.start + i * PAGE;
    const last = runs.at(-1);
    if (last && last[1] === address) last[1] += PAGE;
    else runs.push([address, address + PAGE]);
  }
  return runs;
}

function readAt(mem: Deno.FsFile, address: number, length: number): Uint8Array | undefined {
  const bytes = new Uint8Array(length);
  try {
    mem.seekSync(address, Deno.SeekMode.Start);
    let got = 0;
    while (got < length) {
      const n = mem.readSync(bytes.subarray(got));
      if (n === null || n === 0) break;
      got += n;
    }
    return got === length ? bytes : bytes.subarray(0, got);
  } catch {
    // Mappings can vanish or refuse reads (guard pages) between maps and mem: nothing to see there.
    return undefined;
  }
}

function containsAt(chunks: Uint8Array[], needle: Uint8Array): boolean {
  return chunks.some((c) => scanBytes(c, [{ bytes: needle, label: "" }]).length > 0);
}

/**
 * Many-pattern search: a 16-million-entry bit filter on each position's first three bytes rejects
 * almost every position at once; the rest are looked up by their first four bytes.
 */
class Matcher {
  readonly #filter = new Uint8Array(1 << 21);
  readonly #byHead = new Map<number, Pattern[]>();

  constructor(patterns: readonly Pattern[]) {
    for (const p of patterns) {
      if (p.bytes.length < 8) throw new Error(`pattern ${p.label} is shorter than 8 bytes`);
      const head = (p.bytes[0] | (p.bytes[1] << 8) | (p.bytes[2] << 16) | (p.bytes[3] << 24)) >>> 0;
      const low = head & 0xffffff;
      this.#filter[low >> 3] |= 1 << (low & 7);
      const list = this.#byHead.get(head) ?? [];
      list.push(p);
      this.#byHead.set(head, list);
    }
  }

  *find(bytes: Uint8Array): Generator<{ offset: number; label: string }> {
    const filter = this.#filter;
    const end = bytes.length - 8;
    for (let i = 0; i <= end; i++) {
      const low = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16);
      if ((filter[low >> 3] & (1 << (low & 7))) === 0) continue;
      const candidates = this.#byHead.get((low | (bytes[i + 3] << 24)) >>> 0);
      if (candidates === undefined) continue;
      for (const p of candidates) {
        if (i + p.bytes.length <= bytes.length && equalAt(bytes, i, p.bytes)) yield { offset: i, label: p.label };
      }
    }
  }
}

function equalAt(haystack: Uint8Array, at: number, needle: Uint8Array): boolean {
  for (let j = 0; j < needle.length; j++) if (haystack[at + j] !== needle[j]) return false;
  return true;
}
