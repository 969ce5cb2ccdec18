/**
 * Replaces every call to compiler-rt's `__multi3` (128-bit multiply) in a
 * linked wasm32 module with inline code around the wide-arithmetic
 * instruction `i64.mul_wide_u`. clang lowers BoringSSL's 64-bit-limb products
 * (`(unsigned __int128)a * b`) to such calls, which multiply in 32-bit pieces;
 * the instruction gives the engine one 64x64->128 multiply instead.
 *
 * `__multi3(ret: i32, a_lo, a_hi, b_lo, b_hi: i64)` stores the low 128 bits
 * of a * b at `ret`. The replacement computes exactly that for all inputs:
 * lo:hi = mul_wide_u(a_lo, b_lo); hi += a_lo * b_hi + a_hi * b_lo.
 *
 * CLI:
 *   deno run --allow-read --allow-write scripts/wasm_wide.ts IN OUT
 *
 * The function is found by name (the linker's name section), so this runs
 * before custom sections are stripped.
 *
 * @module
 */

import { CUSTOM_SECTION, parseSections } from "./wasm_sections.ts";

const TYPE_SECTION = 1;
const IMPORT_SECTION = 2;
const FUNCTION_SECTION = 3;
const CODE_SECTION = 10;
const FUNC_NAMES_SUBSECTION = 1;

const I32 = 0x7f;
const I64 = 0x7e;

/** Opcodes this rewrite emits. */
const enum Op {
  Call = 0x10,
  LocalGet = 0x20,
  LocalSet = 0x21,
  I64Store = 0x37,
  I64Add = 0x7c,
  I64Mul = 0x7e,
  PrefixFC = 0xfc,
}

/** `i64.mul_wide_u`: 0xFC 22 (wide-arithmetic proposal). */
const MUL_WIDE_U = 22;
/** log2 of the 8-byte alignment of the result words. */
const ALIGN_8 = 3;

class Reader {
  constructor(readonly b: Uint8Array, public pos: number, readonly end: number) {}
  byte(): number {
    if (this.pos >= this.end) throw new Error(`wasm: unexpected end at ${this.pos}`);
    return this.b[this.pos++];
  }
  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const x = this.byte();
      result += (x & 0x7f) * 2 ** shift;
      if ((x & 0x80) === 0) return result;
    }
    throw new Error("wasm: LEB128 too long");
  }
  /** Skips a signed or unsigned LEB128 of any width. */
  leb(): void {
    while (this.byte() & 0x80) { /* continuation */ }
  }
  skip(n: number): void {
    this.pos += n;
    if (this.pos > this.end) throw new Error("wasm: immediate past end");
  }
  name(): string {
    const len = this.u32();
    const s = new TextDecoder().decode(this.b.subarray(this.pos, this.pos + len));
    this.pos += len;
    return s;
  }
}

function u32(n: number): number[] {
  const out: number[] = [];
  do {
    let x = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) x |= 0x80;
    out.push(x);
  } while (n !== 0);
  return out;
}

interface FuncType {
  params: number[];
  results: number[];
}

function readTypes(bytes: Uint8Array, start: number, end: number): FuncType[] {
  const r = new Reader(bytes, start, end);
  const out: FuncType[] = [];
  for (let n = r.u32(); n > 0; n--) {
    if (r.byte() !== 0x60) throw new Error("wasm: only function types are supported");
    const params = Array.from({ length: r.u32() }, () => r.byte());
    const results = Array.from({ length: r.u32() }, () => r.byte());
    out.push({ params, results });
  }
  return out;
}

function countFunctionImports(bytes: Uint8Array, start: number, end: number): number {
  const r = new Reader(bytes, start, end);
  let funcs = 0;
  for (let n = r.u32(); n > 0; n--) {
    r.name();
    r.name();
    const kind = r.byte();
    if (kind === 0) {
      r.u32();
      funcs++;
    } else if (kind === 1) {
      r.byte();
      const flags = r.byte();
      r.u32();
      if (flags & 1) r.u32();
    } else if (kind === 2) {
      const flags = r.byte();
      r.u32();
      if (flags & 1) r.u32();
    } else if (kind === 3) {
      r.byte();
      r.byte();
    } else {
      throw new Error(`wasm: unsupported import kind ${kind}`);
    }
  }
  return funcs;
}

function findFunctionByName(bytes: Uint8Array, name: string): number {
  const s = parseSections(bytes).find((x) => x.id === CUSTOM_SECTION && x.name === "name");
  if (!s) throw new Error("wasm: no name section (run before custom sections are stripped)");
  const r = new Reader(bytes, s.payloadStart, s.end);
  r.name();
  while (r.pos < s.end) {
    const id = r.byte();
    const size = r.u32();
    const next = r.pos + size;
    if (id === FUNC_NAMES_SUBSECTION) {
      for (let n = r.u32(); n > 0; n--) {
        const index = r.u32();
        if (r.name() === name) return index;
      }
    }
    r.pos = next;
  }
  throw new Error(`wasm: no function named ${name}`);
}

/**
 * Offsets of every `call target` in one function body's instructions.
 * Decodes each instruction (MVP, sign extension, saturating truncation, bulk
 * memory, reference types, multi-value, wide arithmetic), so a byte that merely looks like a
 * call inside an immediate is never taken for one; anything else is refused.
 */
function findCalls(r: Reader, target: number): Array<[number, number]> {
  const found: Array<[number, number]> = [];
  while (r.pos < r.end) {
    const at = r.pos;
    const op = r.byte();
    if (op <= 0x01 || op === 0x05 || op === 0x0b || op === 0x0f || op === 0x1a || op === 0x1b) continue;
    if (op >= 0x02 && op <= 0x04) r.leb(); // block type
    else if (op === 0x0c || op === 0x0d) r.u32();
    else if (op === 0x0e) {
      for (let n = r.u32(); n > 0; n--) r.u32();
      r.u32();
    } else if (op === Op.Call) {
      const f = r.u32();
      if (f === target) found.push([at, r.pos]);
    } else if (op === 0x11) {
      r.u32();
      r.u32();
    } else if (op === 0x1c) {
      for (let n = r.u32(); n > 0; n--) r.byte();
    } else if (op >= 0x20 && op <= 0x26) r.u32();
    else if (op >= 0x28 && op <= 0x3e) {
      const align = r.u32();
      if (align & 0x40) r.u32(); // memory index
      r.u32();
    } else if (op === 0x3f || op === 0x40) r.u32();
    else if (op === 0x41 || op === 0x42) r.leb();
    else if (op === 0x43) r.skip(4);
    else if (op === 0x44) r.skip(8);
    else if (op >= 0x45 && op <= 0xc4) continue;
    else if (op === 0xd0) r.byte();
    else if (op === 0xd1) continue;
    else if (op === 0xd2) r.u32();
    else if (op === Op.PrefixFC) {
      const sub = r.u32();
      if (sub <= 7 || (sub >= 19 && sub <= 22)) continue; // saturating truncation; wide arithmetic
      if (sub === 8 || sub === 10 || sub === 12 || sub === 14) {
        r.u32();
        r.u32();
      } else if (sub <= 17) r.u32();
      else throw new Error(`wasm: unsupported opcode 0xfc ${sub} at ${at}`);
    } else throw new Error(`wasm: unsupported opcode 0x${op.toString(16)} at ${at}`);
  }
  return found;
}

/**
 * The inline replacement of one `call __multi3`, given the indices of five
 * fresh locals (ret: i32; a_lo, a_hi, b_lo, b_hi: i64) and one more i64.
 */
function inlineMulti3(ret: number, aLo: number, aHi: number, bLo: number, bHi: number, hi: number): number[] {
  const get = (i: number) => [Op.LocalGet, ...u32(i)];
  const set = (i: number) => [Op.LocalSet, ...u32(i)];
  return [
    ...set(bHi),
    ...set(bLo),
    ...set(aHi),
    ...set(aLo),
    ...set(ret),
    // A store between the operands' loads and the multiply: V8 folds a load
    // into the instruction that uses it only when no side effect lies
    // between them, so no multiplicand can become a `mul [memory]` operand
    // (the form reported to go wrong in V8 15.0; test/guest_wide_test.ts
    // reads V8's machine code to confirm none is made). The word is
    // overwritten with the product's low half just below.
    ...get(ret),
    ...get(aLo),
    Op.I64Store,
    ALIGN_8,
    0,
    ...get(ret),
    ...get(aLo),
    ...get(bLo),
    Op.PrefixFC,
    MUL_WIDE_U,
    ...set(hi),
    Op.I64Store,
    ALIGN_8,
    0,
    ...get(ret),
    ...get(hi),
    ...get(aLo),
    ...get(bHi),
    Op.I64Mul,
    Op.I64Add,
    ...get(aHi),
    ...get(bLo),
    Op.I64Mul,
    Op.I64Add,
    Op.I64Store,
    ALIGN_8,
    8,
  ];
}

/** What the rewrite did, for the build log and the tests. */
export interface WideReport {
  /** Calls replaced. */
  sites: number;
  /** Indices (in the function index space) of the functions that held them. */
  functions: number[];
}

/**
 * Rewrites a module's `__multi3` calls into inline `i64.mul_wide_u`.
 * @param bytes a linked module that still has its name section
 * @returns the new module (only the code section changes) and what changed
 * @throws if `__multi3` is missing or has another signature, or a body holds
 *   an instruction the decoder does not know
 * @example
 * ```ts
 * const { module, report } = rewriteMulti3(Deno.readFileSync("keycell_signer.wasm"));
 * Deno.writeFileSync("keycell_signer.wide.wasm", module);
 * console.log(`${report.sites} products now use i64.mul_wide_u`);
 * ```
 */
export function rewriteMulti3(bytes: Uint8Array): { module: Uint8Array<ArrayBuffer>; report: WideReport } {
  const sections = parseSections(bytes);
  const sec = (id: number) => {
    const s = sections.find((x) => x.id === id);
    if (!s) throw new Error(`wasm: no section ${id}`);
    return s;
  };
  const types = readTypes(bytes, sec(TYPE_SECTION).payloadStart, sec(TYPE_SECTION).end);
  const importSec = sections.find((x) => x.id === IMPORT_SECTION);
  const imported = importSec ? countFunctionImports(bytes, importSec.payloadStart, importSec.end) : 0;
  const fr = new Reader(bytes, sec(FUNCTION_SECTION).payloadStart, sec(FUNCTION_SECTION).end);
  const funcTypes = Array.from({ length: fr.u32() }, () => types[fr.u32()]);

  const target = findFunctionByName(bytes, "__multi3");
  const t = funcTypes[target - imported];
  if (!t || t.params.join() !== [I32, I64, I64, I64, I64].join() || t.results.length !== 0) {
    throw new Error("wasm: __multi3 does not have the (i32, i64, i64, i64, i64) -> () signature");
  }

  const code = sec(CODE_SECTION);
  const cr = new Reader(bytes, code.payloadStart, code.end);
  const count = cr.u32();
  const bodies: Uint8Array[] = [new Uint8Array(u32(count))];
  const report: WideReport = { sites: 0, functions: [] };
  for (let i = 0; i < count; i++) {
    const size = cr.u32();
    const start = cr.pos;
    const end = start + size;
    cr.pos = end;
    const br = new Reader(bytes, start, end);
    let nLocals = funcTypes[i].params.length;
    const groups = br.u32();
    const groupsStart = br.pos;
    for (let g = 0; g < groups; g++) {
      nLocals += br.u32();
      br.byte();
    }
    const codeStart = br.pos;
    const calls = i + imported === target ? [] : findCalls(br, target);
    if (calls.length === 0) {
      bodies.push(new Uint8Array(u32(size)), bytes.subarray(start, end));
      continue;
    }
    report.sites += calls.length;
    report.functions.push(i + imported);
    // Fresh locals: one i32 and five i64, declared as two more groups.
    const [ret, aLo, aHi, bLo, bHi, hi] = [0, 1, 2, 3, 4, 5].map((k) => nLocals + k);
    const parts: number[][] = [[...u32(groups + 2)]];
    parts.push([...bytes.subarray(groupsStart, codeStart)]);
    parts.push([1, I32, 5, I64]);
    const inline = inlineMulti3(ret, aLo, aHi, bLo, bHi, hi);
    let at = codeStart;
    const chunks: Uint8Array[] = [];
    for (const [s, e] of calls) {
      chunks.push(bytes.subarray(at, s), new Uint8Array(inline));
      at = e;
    }
    chunks.push(bytes.subarray(at, end));
    const head = new Uint8Array(parts.flat());
    const bodyLen = head.length + chunks.reduce((n, c) => n + c.length, 0);
    bodies.push(new Uint8Array(u32(bodyLen)), head, ...chunks);
  }
  if (report.sites === 0) throw new Error("wasm: no call to __multi3 found");

  const payloadLen = bodies.reduce((n, b) => n + b.length, 0);
  const parts: Uint8Array[] = [bytes.subarray(0, code.start), new Uint8Array([CODE_SECTION, ...u32(payloadLen)]), ...bodies, bytes.subarray(code.end)];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return { module: out, report };
}

if (import.meta.main) {
  if (Deno.args.length !== 2) {
    console.error("usage: wasm_wide.ts IN OUT");
    Deno.exit(2);
  }
  const { module, report } = rewriteMulti3(Deno.readFileSync(Deno.args[0]));
  Deno.writeFileSync(Deno.args[1], module);
  console.error(`wasm_wide: ${report.sites} __multi3 calls inlined in ${report.functions.length} functions`);
}
