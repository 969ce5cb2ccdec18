/**
 * Reads the x86-64 code that V8's optimizing tier emits for a wasm module and
 * classifies the operand of every 64-bit one-operand `mul` (what V8 emits for
 * `i64.mul_wide_u`): a register, a stack-frame slot (`[rbp-N]`), or a folded
 * wasm-memory operand. The last is the form V8 15.0 got wrong, and what the
 * wide guest's code shape is built to rule out.
 *
 * How: a child Deno runs with `--print-wasm-code`, which in a release build
 * prints each function's code address range without disassembly; this
 * process reads those bytes from `/proc/PID/mem` (its own child, so ptrace
 * rules allow it) and disassembles them with binutils' `objdump`.
 *
 * @module
 */

/** Flags the child runs with, besides `--print-wasm-code`. */
export const WIDE_FLAG = "--experimental-wasm-wide-arithmetic";

/** How the child gets its code compiled. */
export type Tiering =
  /** Every function compiled by the optimizing tier up front (no Liftoff, no inlining feedback). */
  | "eager"
  /** Default tiering after signing with every key type: Liftoff, then the optimizing tier with inlining. */
  | "warm";

/** What one scan found. */
export interface MultiplyScan {
  /** Optimized functions read. */
  functions: number;
  /** 64-bit one-operand `mul` instructions, by operand form. */
  register: number;
  frameSlot: number;
  memory: number;
  /** Up to 10 memory-operand instructions, for the report. */
  memoryExamples: string[];
}

const ENTRY = /\nindex: (\d+)\nkind: wasm function\ncompiler: TurboFan[\s\S]*?Instructions \(size = (\d+), (0x[0-9a-f]+)-0x[0-9a-f]+\)/g;
const REG64 = /^(r[a-d]x|r[sd]i|r[sb]p|r(8|9|1[0-5]))$/;
const FRAME_SLOT = /^QWORD PTR \[rbp[-+]0x[0-9a-f]+\]$/;

function childArgs(wasm: string, tiering: Tiering): string[] {
  const child = new URL(tiering === "warm" ? "./_warm_child.ts" : "./_eager_child.ts", import.meta.url).pathname;
  const flags = tiering === "warm"
    ? [WIDE_FLAG, "--print-wasm-code", "--wasm-sync-tier-up"] // tier-up on the spot, however loaded the machine
    : [WIDE_FLAG, "--print-wasm-code", "--no-liftoff", "--no-wasm-lazy-compilation"];
  // stdbuf: V8 prints through C stdio, which a pipe would otherwise buffer
  // until exit.
  return ["-o0", Deno.execPath(), "run", "--no-config", "--no-lock", "--allow-read", "--allow-run=openssl", `--v8-flags=${flags.join(",")}`, child, wasm];
}

/**
 * Compiles `wasm` in a child Deno and classifies every 64-bit `mul` in the
 * optimized code of its functions (the last optimized version of each).
 * @param wasm path of the module
 * @param tiering how the child compiles it
 * @returns counts by operand form
 * @throws if the child fails, prints no optimized code, or objdump is missing
 * @example
 * ```ts
 * const scan = await scanMultiplies("wasm/signer-wide.wasm", "eager");
 * if (scan.memory > 0) throw new Error(scan.memoryExamples.join("\n"));
 * ```
 */
export async function scanMultiplies(wasm: string, tiering: Tiering): Promise<MultiplyScan> {
  const child = new Deno.Command("stdbuf", { args: childArgs(wasm, tiering), stdin: "piped", stdout: "piped", stderr: "inherit" }).spawn();
  const stdin = child.stdin.getWriter();
  let text = "";
  const dec = new TextDecoder();
  const reader = child.stdout.getReader();
  try {
    while (!text.includes("\nCOMPILED\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the child exited before compiling (its stderr is above)");
      text += dec.decode(value, { stream: true });
    }
    const code = new Map<number, { start: number; size: number }>();
    for (const m of text.matchAll(ENTRY)) code.set(Number(m[1]), { size: Number(m[2]), start: Number(BigInt(m[3])) });
    if (code.size === 0) throw new Error("the child printed no optimized wasm code");
    const dir = Deno.makeTempDirSync({ prefix: "keycell-x64-" });
    try {
      const mem = Deno.openSync(`/proc/${child.pid}/mem`, { read: true });
      const files: string[] = [];
      for (const [index, { start, size }] of code) {
        const buf = new Uint8Array(size);
        mem.seekSync(start, Deno.SeekMode.Start);
        for (let got = 0; got < size;) {
          const n = mem.readSync(buf.subarray(got));
          if (!n) throw new Error(`short read of function ${index}`);
          got += n;
        }
        const f = `${dir}/f${index}.bin`;
        Deno.writeFileSync(f, buf);
        files.push(f);
      }
      mem.close();
      const scan: MultiplyScan = { functions: code.size, register: 0, frameSlot: 0, memory: 0, memoryExamples: [] };
      for (const f of files) {
        const out = new Deno.Command("objdump", { args: ["-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel", f], stdout: "piped", stderr: "piped" }).outputSync();
        if (!out.success) throw new Error(`objdump: ${dec.decode(out.stderr)}`);
        for (const line of dec.decode(out.stdout).split("\n")) {
          const m = /\tmul\s+(.+?)\s*$/.exec(line);
          if (!m) continue;
          const operand = m[1];
          if (REG64.test(operand)) scan.register++;
          else if (FRAME_SLOT.test(operand)) scan.frameSlot++;
          else if (operand.startsWith("QWORD PTR")) {
            scan.memory++;
            if (scan.memoryExamples.length < 10) scan.memoryExamples.push(`${f.split("/").pop()}: mul ${operand}`);
          }
          // 32-bit muls (division by constants) are not the wide multiply.
        }
      }
      return scan;
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  } finally {
    await stdin.close().catch(() => {});
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    await child.status;
  }
}

if (import.meta.main) {
  const [wasm, tiering = "eager"] = Deno.args;
  console.log(JSON.stringify(await scanMultiplies(wasm, tiering as Tiering)));
}
