// Proves wasm/signer-wide.wasm, the 64-bit-limb guest whose 64x64->128
// products are the wide-arithmetic `i64.mul_wide_u`: the rewrite that puts
// the instruction in computes __multi3's products exactly in every V8 tier;
// V8's optimized code for the guest multiplies only registers and stack
// slots, never a folded wasm-memory operand (the form V8 15.0 miscompiles);
// and its signatures check out against openssl, node:crypto and WebCrypto.
// V8 runs the instruction only with --experimental-wasm-wide-arithmetic, so
// every wide run happens in a child Deno given that flag.

import assert from "node:assert/strict";
import { rewriteMulti3 } from "../scripts/wasm_wide.ts";
import { listExports, listImports } from "../scripts/wasm_sections.ts";
import { scanMultiplies, WIDE_FLAG } from "../bench/wide/_x64_code.ts";
import type { SignCheck } from "../bench/wide/_sign_check.ts";

const WIDE = new URL("../wasm/signer-wide.wasm", import.meta.url);
const NARROW = new URL("../wasm/signer.wasm", import.meta.url);
/** Sites `scripts/build-signer.sh --wide` rewrites; a change means BoringSSL or clang changed. */
const WIDE_SITES = 1918;
/** Random products compared with BigInt per V8 tier. */
const PRODUCTS = 1_000_000;

// ------------------------------------------------------------ a test module

const u32 = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
const vec = (items: number[][]) => [...u32(items.length), ...items.flat()];
const section = (id: number, payload: number[]) => [id, ...u32(payload.length), ...payload];
const str = (s: string) => vec([...new TextEncoder().encode(s)].map((b) => [b]));

const I32 = 0x7f;
const I64 = 0x7e;
const [LOCAL_GET, I32_CONST, I64_CONST, I32_ADD, I64_LOAD, CALL, END] = [0x20, 0x41, 0x42, 0x6a, 0x29, 0x10, 0x0b];
const load = (offset: number) => [LOCAL_GET, 0, I64_LOAD, 3, ...u32(offset)];

/**
 * A module shaped like clang's output: `__multi3` (a trap: the rewrite must
 * leave no call to it) and two callers passing it the product's address and
 * the operands, `mul128` with all four words loaded, `mul64` with constant
 * zero high words as clang emits for 64x64->128.
 */
function multi3Module(): Uint8Array {
  const types = [[0x60, ...vec([[I32], [I64], [I64], [I64], [I64]]), 0], [0x60, ...vec([[I32]]), 0]];
  const result = [LOCAL_GET, 0, I32_CONST, 32, I32_ADD];
  const mul128 = [...result, ...load(0), ...load(8), ...load(16), ...load(24), CALL, 0];
  const mul64 = [...result, ...load(0), I64_CONST, 0, ...load(16), I64_CONST, 0, CALL, 0];
  const body = (code: number[]) => {
    const b = [0, ...code, END];
    return [...u32(b.length), ...b];
  };
  const names = [...str("name"), ...section(1, vec([[0, ...str("__multi3")]]))];
  return new Uint8Array([
    0, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, vec(types)),
    ...section(3, vec([[0], [1], [1]])),
    ...section(5, vec([[0, 1]])),
    ...section(7, vec([[...str("mul128"), 0, 1], [...str("mul64"), 0, 2], [...str("m"), 2, 0]])),
    ...section(10, vec([body([0x00]), body(mul128), body(mul64)])),
    ...section(0, names),
  ]);
}

/** The shape V8 folds: `i64.mul_wide_u` straight on two single-use loads. */
function foldableModule(): Uint8Array {
  const [localSet, i64Add, i64Store] = [0x21, 0x7c, 0x37];
  const code = [
    ...vec([[2, I64]]),
    ...load(0),
    ...load(8),
    0xfc,
    22,
    localSet,
    1,
    localSet,
    2,
    LOCAL_GET,
    0,
    LOCAL_GET,
    1,
    LOCAL_GET,
    2,
    i64Add,
    i64Store,
    3,
    16,
    END,
  ];
  return new Uint8Array([
    0, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...section(1, vec([[0x60, ...vec([[I32]]), 0]])),
    ...section(3, vec([[0]])),
    ...section(5, vec([[0, 1]])),
    ...section(10, vec([[...u32(code.length), ...code]])),
  ]);
}

function tempFile(bytes: Uint8Array): string {
  const path = Deno.makeTempFileSync({ prefix: "keycell-wide-", suffix: ".wasm" });
  Deno.writeFileSync(path, bytes);
  return path;
}

async function childJson<T>(script: string, v8Flags: string[], args: string[]): Promise<T> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-config",
      "--no-lock",
      "--allow-read",
      "--allow-write",
      "--allow-run=openssl",
      `--v8-flags=${v8Flags.join(",")}`,
      new URL(script, import.meta.url).pathname,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `${script} failed: ${err}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** V8's tiers, by the flags that force them. */
const TIERS: Record<string, string[]> = {
  "Liftoff only": [WIDE_FLAG, "--liftoff-only"],
  "optimizing tier only": [WIDE_FLAG, "--no-liftoff"],
  "default tiering": [WIDE_FLAG],
};

// ------------------------------------------------------------------- tests

Deno.test("wasm_wide replaces each __multi3 call and finds it by name", () => {
  const { module, report } = rewriteMulti3(multi3Module());
  assert.deepEqual(report, { sites: 2, functions: [1, 2] });
  assert.throws(() => rewriteMulti3(module), /no call to __multi3/);
  assert.throws(() => rewriteMulti3(foldableModule()), /no name section/);
});

Deno.test("the rewritten products equal BigInt's in every V8 tier", async () => {
  const path = tempFile(rewriteMulti3(multi3Module()).module);
  try {
    for (const [tier, flags] of Object.entries(TIERS)) {
      const r = await childJson<{ checked: number; wrong: number; examples: string[] }>(
        "../bench/wide/_products_child.ts",
        flags,
        [path, String(PRODUCTS)],
      );
      assert.equal(r.checked, PRODUCTS, tier);
      assert.deepEqual(r.examples, [], tier);
      assert.equal(r.wrong, 0, tier);
    }
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("the machine-code scan sees a folded memory operand where V8 makes one", async () => {
  const path = tempFile(foldableModule());
  try {
    const scan = await scanMultiplies(path, "eager");
    assert.equal(scan.functions, 1);
    assert.equal(scan.memory, 1, JSON.stringify(scan));
  } finally {
    Deno.removeSync(path);
  }
});

for (const tiering of ["eager", "warm"] as const) {
  Deno.test(`V8's optimized code for the wide guest multiplies no wasm-memory operand (${tiering})`, async () => {
    const scan = await scanMultiplies(WIDE.pathname, tiering);
    assert.deepEqual(scan.memoryExamples, []);
    assert.equal(scan.memory, 0);
    // Every site reached the optimizing tier in eager mode (loop peeling
    // and unrolling may copy some); warm mode compiles only the hot ones.
    const multiplies = scan.register + scan.frameSlot;
    assert.ok(multiplies >= (tiering === "eager" ? WIDE_SITES : 100), `${multiplies} multiplies`);
  });
}

for (const tier of ["optimizing tier only", "default tiering"]) {
  Deno.test(`the wide guest's signatures check out (${tier})`, async () => {
    const r = await childJson<Record<string, SignCheck>>("../bench/wide/_sign_check.ts", TIERS[tier], [WIDE.pathname, "0.5"]);
    const kinds = ["rsa2048", "rsa3072", "rsa4096", "p256", "p384", "rsa2048-generated", "p384-generated"];
    assert.deepEqual(Object.keys(r), kinds);
    for (const kind of kinds) {
      assert.ok(r[kind].signed > 0, kind);
      assert.equal(r[kind].wrong, 0, `${kind}: ${JSON.stringify(r[kind])}`);
    }
    for (const kind of ["rsa2048", "rsa3072", "rsa4096"]) assert.ok(r[kind].opensslIdentical >= 2, kind);
  });
}

Deno.test("the wide guest has the same ABI as the 32-bit guest", () => {
  const wide = Deno.readFileSync(WIDE);
  const narrow = Deno.readFileSync(NARROW);
  const names = (b: Uint8Array) => listExports(b).map((e) => `${e.name} ${e.kind}`);
  assert.deepEqual(names(wide), names(narrow));
  assert.deepEqual(listImports(wide), listImports(narrow));
});

Deno.test("the wide guest passes guest_abi_test.ts's kc_verify tests", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "test",
      "--allow-all",
      `--v8-flags=${WIDE_FLAG}`,
      "--filter",
      "kc_verify",
      new URL("guest_abi_test.ts", import.meta.url).pathname,
    ],
    env: { KEYCELL_GUEST_ABI_MODULE: WIDE.pathname, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, text);
  assert.match(text, /ok \| 3 passed \| 0 failed/, text);
});

Deno.test("wasm/signer-wide.wasm.sha256 records the committed module", async () => {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", Deno.readFileSync(WIDE))).toHex();
  const recorded = Deno.readTextFileSync(new URL("../wasm/signer-wide.wasm.sha256", import.meta.url));
  assert.equal(recorded, `${digest}  signer-wide.wasm\n`);
});
