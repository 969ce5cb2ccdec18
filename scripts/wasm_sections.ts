/**
 * Reads and rewrites the sections of a WebAssembly binary, enough for the
 * signer's build and tests: list imports and exports, keep only an allowlist
 * of function exports, drop custom sections. LLD always exports the linear
 * memory and a few globals; the rewrite is what keeps them from the host.
 *
 * CLI:
 *   deno run --allow-read scripts/wasm_sections.ts imports FILE
 *   deno run --allow-read scripts/wasm_sections.ts exports FILE
 *   deno run --allow-read --allow-write scripts/wasm_sections.ts rewrite IN OUT name1,name2,...
 *
 * `rewrite` keeps only the named exports (each must exist and be a
 * function) and strips every custom section.
 *
 * @module
 */

/** Kinds of import and export entries, by their binary-format byte. */
export type ExternKind = "func" | "table" | "memory" | "global" | "tag";

const KINDS: ExternKind[] = ["func", "table", "memory", "global", "tag"];

/** Section id of custom sections. */
export const CUSTOM_SECTION = 0;
/** Section id of the import section. */
export const IMPORT_SECTION = 2;
/** Section id of the export section. */
export const EXPORT_SECTION = 7;

/** One top-level section: its id and where it sits in the binary. */
export interface Section {
  /** Section id (0 custom, 2 import, 7 export, ...). */
  id: number;
  /** Offset of the section's id byte. */
  start: number;
  /** Offset of the section's first payload byte. */
  payloadStart: number;
  /** Offset just past the section. */
  end: number;
  /** For custom sections, the section's name. */
  name?: string;
}

/** An entry of the import section. */
export interface WasmImport {
  /** Module name (`keycell` for the signer). */
  module: string;
  /** Field name. */
  name: string;
  /** What is imported. */
  kind: ExternKind;
}

/** An entry of the export section. */
export interface WasmExport {
  /** Export name. */
  name: string;
  /** What is exported. */
  kind: ExternKind;
  /** Index in the function, table, memory, global or tag index space. */
  index: number;
}

const MAGIC = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

class Reader {
  constructor(readonly bytes: Uint8Array, public pos: number, readonly end: number) {}

  byte(): number {
    if (this.pos >= this.end) throw new Error(`wasm: unexpected end at ${this.pos}`);
    return this.bytes[this.pos++];
  }

  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) {
        if (result > 0xffffffff) throw new Error("wasm: u32 out of range");
        return result;
      }
    }
    throw new Error("wasm: LEB128 too long");
  }

  name(): string {
    const len = this.u32();
    if (this.pos + len > this.end) throw new Error("wasm: name past end");
    const s = new TextDecoder("utf-8", { fatal: true }).decode(
      this.bytes.subarray(this.pos, this.pos + len),
    );
    this.pos += len;
    return s;
  }

  limits(): void {
    const flags = this.byte();
    this.u32();
    if (flags & 1) this.u32();
  }
}

function kindOf(b: number): ExternKind {
  const k = KINDS[b];
  if (k === undefined) throw new Error(`wasm: unknown extern kind ${b}`);
  return k;
}

function encodeU32(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function encodeName(s: string): number[] {
  const b = new TextEncoder().encode(s);
  return [...encodeU32(b.length), ...b];
}

/**
 * Splits a binary into its top-level sections.
 * @param bytes a complete wasm binary (version 1)
 * @returns the sections in file order
 * @throws if the header or a section length is malformed
 */
export function parseSections(bytes: Uint8Array): Section[] {
  if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new Error("wasm: bad magic or version");
  }
  const sections: Section[] = [];
  const r = new Reader(bytes, 8, bytes.length);
  while (r.pos < bytes.length) {
    const start = r.pos;
    const id = r.byte();
    const size = r.u32();
    const payloadStart = r.pos;
    const end = payloadStart + size;
    if (end > bytes.length) throw new Error(`wasm: section ${id} past end`);
    const section: Section = { id, start, payloadStart, end };
    if (id === CUSTOM_SECTION) {
      section.name = new Reader(bytes, payloadStart, end).name();
    }
    sections.push(section);
    r.pos = end;
  }
  return sections;
}

/**
 * Lists the import section's entries.
 * @param bytes a complete wasm binary
 * @returns every import with its module, name and kind (empty if none)
 */
export function listImports(bytes: Uint8Array): WasmImport[] {
  const s = parseSections(bytes).find((x) => x.id === IMPORT_SECTION);
  if (!s) return [];
  const r = new Reader(bytes, s.payloadStart, s.end);
  const out: WasmImport[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const module = r.name();
    const name = r.name();
    const kind = kindOf(r.byte());
    switch (kind) {
      case "func":
        r.u32();
        break;
      case "table":
        r.byte();
        r.limits();
        break;
      case "memory":
        r.limits();
        break;
      case "global":
        r.byte();
        r.byte();
        break;
      case "tag":
        r.byte();
        r.u32();
        break;
    }
    out.push({ module, name, kind });
  }
  return out;
}

/**
 * Lists the export section's entries.
 * @param bytes a complete wasm binary
 * @returns every export with its name, kind and index (empty if none)
 */
export function listExports(bytes: Uint8Array): WasmExport[] {
  const s = parseSections(bytes).find((x) => x.id === EXPORT_SECTION);
  if (!s) return [];
  const r = new Reader(bytes, s.payloadStart, s.end);
  const out: WasmExport[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const name = r.name();
    const kind = kindOf(r.byte());
    const index = r.u32();
    out.push({ name, kind, index });
  }
  return out;
}

// Spreading a code section into an array would overflow the call stack, so
// pieces are joined as typed arrays.
function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function replaceSection(
  bytes: Uint8Array,
  sections: Section[],
  id: number,
  payload: number[],
): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  let done = false;
  for (const s of sections) {
    if (s.id === id) {
      parts.push(new Uint8Array([id, ...encodeU32(payload.length), ...payload]));
      done = true;
    } else {
      parts.push(bytes.subarray(s.start, s.end));
    }
  }
  if (!done) throw new Error(`wasm: no section ${id} to replace`);
  return concat(parts);
}

/**
 * Rewrites the export section to exactly the allowlisted function exports,
 * in allowlist order. Memory, table and global exports always go.
 * @param bytes a complete wasm binary
 * @param allow names to keep; each must be exported as a function
 * @returns a new binary; other sections are copied unchanged
 * @throws if an allowlisted name is missing or is not a function
 */
export function rewriteExports(bytes: Uint8Array, allow: string[]): Uint8Array<ArrayBuffer> {
  const exports = listExports(bytes);
  const payload: number[] = [...encodeU32(allow.length)];
  for (const name of allow) {
    const e = exports.find((x) => x.name === name);
    if (!e) throw new Error(`wasm: allowlisted export ${name} is missing`);
    if (e.kind !== "func") throw new Error(`wasm: allowlisted export ${name} is a ${e.kind}`);
    payload.push(...encodeName(name), 0, ...encodeU32(e.index));
  }
  return replaceSection(bytes, parseSections(bytes), EXPORT_SECTION, payload);
}

/**
 * Removes every custom section (names, producers, target features, debug
 * info): they carry toolchain paths and versions the host has no use for.
 * @param bytes a complete wasm binary
 * @returns a new binary without custom sections
 */
export function stripCustomSections(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  for (const s of parseSections(bytes)) {
    if (s.id !== CUSTOM_SECTION) parts.push(bytes.subarray(s.start, s.end));
  }
  return concat(parts);
}

function main(args: string[]): number {
  const [cmd, ...rest] = args;
  if ((cmd === "imports" || cmd === "exports") && rest.length === 1) {
    const bytes = Deno.readFileSync(rest[0]);
    const rows = cmd === "imports"
      ? listImports(bytes).map((i) => `${i.module}.${i.name} ${i.kind}`)
      : listExports(bytes).map((e) => `${e.name} ${e.kind}`);
    for (const row of rows) console.log(row);
    return 0;
  }
  if (cmd === "rewrite" && rest.length === 3) {
    const [input, output, names] = rest;
    const allow = names.split(",").filter((n) => n.length > 0);
    const bytes = stripCustomSections(rewriteExports(Deno.readFileSync(input), allow));
    Deno.writeFileSync(output, bytes);
    return 0;
  }
  console.error(
    "usage: wasm_sections.ts imports FILE | exports FILE | rewrite IN OUT name1,name2,...",
  );
  return 2;
}

if (import.meta.main) {
  Deno.exit(main(Deno.args));
}
