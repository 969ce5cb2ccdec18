// The guest's linear memory must stay out of the host's reach: no memory,
// table or global export, only the ABI's functions, and only the ABI's six
// imports (no WASI, which could read or write guest memory for the host).

import assert from "node:assert/strict";
import { listExports, listImports, rewriteExports, stripCustomSections } from "../scripts/wasm_sections.ts";
import { WASM } from "./_wasm.ts";

const ALLOWED_EXPORTS = [
  "kc_load",
  "kc_generate",
  "kc_public_key",
  "kc_sign",
  "kc_drop",
  "kc_list",
  "kc_tag",
  "kc_trap",
  "kc_master_new",
  "kc_master_load",
  "kc_master_previous",
  "kc_unseal",
  "kc_reseal",
  "kc_import",
  "kc_stats",
  "kc_verify",
];

const ALLOWED_IMPORTS = ["in_len", "in_read8", "in_read1", "out_write1", "out_write8", "rand8"];

/** Every reason a module breaks the export/import rules; empty when clean. */
function violations(bytes: Uint8Array): string[] {
  const found: string[] = [];
  for (const e of listExports(bytes)) {
    if (e.kind !== "func") found.push(`${e.kind} export ${e.name}`);
    else if (!ALLOWED_EXPORTS.includes(e.name)) found.push(`export ${e.name} outside the allowlist`);
  }
  for (const i of listImports(bytes)) {
    if (i.module !== "keycell" || i.kind !== "func" || !ALLOWED_IMPORTS.includes(i.name)) {
      found.push(`import ${i.module}.${i.name} (${i.kind})`);
    }
  }
  return found;
}

// (module (memory (export "memory") 1) (func (export "kc_tag") (result i32) i32.const 0))
const EXPORTS_MEMORY = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
  0x03, 0x02, 0x01, 0x00, // func 0: type 0
  0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1
  0x07, 0x13, 0x02, // export section, 2 entries
  0x06, 0x6d, 0x65, 0x6d, 0x6f, 0x72, 0x79, 0x02, 0x00, // "memory" memory 0
  0x06, 0x6b, 0x63, 0x5f, 0x74, 0x61, 0x67, 0x00, 0x00, // "kc_tag" func 0
  0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x00, 0x0b, // code: i32.const 0
  0x00, 0x05, 0x04, 0x6e, 0x6f, 0x74, 0x65, // custom section "note"
]);

// (import "wasi_snapshot_preview1" "fd_write" (func ...)) (import "keycell" "rand8" (global i64))
const WASI_IMPORT = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x09, 0x01, 0x60, 0x04, 0x7f, 0x7f, 0x7f, 0x7f, 0x01, 0x7f,
  0x02, 0x34, 0x02,
  0x16, ...new TextEncoder().encode("wasi_snapshot_preview1"), 0x08, ...new TextEncoder().encode("fd_write"), 0x00, 0x00,
  0x07, ...new TextEncoder().encode("keycell"), 0x05, ...new TextEncoder().encode("rand8"), 0x03, 0x7e, 0x00,
]);

Deno.test("wasm/signer.wasm exports only the ABI's functions and imports only the ABI's six", () => {
  const bytes = WASM;
  assert.deepEqual(violations(bytes), []);
  assert.deepEqual(listExports(bytes).map((e) => e.name).sort(), [...ALLOWED_EXPORTS].sort());
  assert.deepEqual(
    listImports(bytes).map((i) => `${i.module}.${i.name}`).sort(),
    ALLOWED_IMPORTS.map((n) => `keycell.${n}`).sort(),
  );
  // The engine agrees with the parser.
  const mod = new WebAssembly.Module(bytes);
  assert.ok(WebAssembly.Module.exports(mod).every((e) => e.kind === "function"));
  assert.ok(WebAssembly.Module.imports(mod).every((i) => i.module === "keycell" && i.kind === "function"));
  assert.equal(WebAssembly.Module.customSections(mod, "name").length, 0, "custom sections are stripped");
});

Deno.test("positive control: a module exporting its memory is flagged", () => {
  new WebAssembly.Module(EXPORTS_MEMORY); // it is a valid module
  assert.deepEqual(violations(EXPORTS_MEMORY), ["memory export memory"]);
  assert.deepEqual(listExports(EXPORTS_MEMORY), [
    { name: "memory", kind: "memory", index: 0 },
    { name: "kc_tag", kind: "func", index: 0 },
  ]);
});

Deno.test("positive control: WASI and non-function imports are flagged", () => {
  new WebAssembly.Module(WASI_IMPORT);
  assert.deepEqual(violations(WASI_IMPORT), [
    "import wasi_snapshot_preview1.fd_write (func)",
    "import keycell.rand8 (global)",
  ]);
});

Deno.test("rewriteExports keeps the allowlist and drops the memory; stripCustomSections drops custom sections", () => {
  const out = stripCustomSections(rewriteExports(EXPORTS_MEMORY, ["kc_tag"]));
  assert.deepEqual(violations(out), []);
  assert.deepEqual(listExports(out), [{ name: "kc_tag", kind: "func", index: 0 }]);
  const mod = new WebAssembly.Module(out);
  assert.deepEqual(WebAssembly.Module.customSections(mod, "note").length, 0);
  assert.equal(WebAssembly.Module.customSections(new WebAssembly.Module(EXPORTS_MEMORY), "note").length, 1);
  const inst = new WebAssembly.Instance(mod);
  assert.equal((inst.exports.kc_tag as () => number)(), 0);
  assert.throws(() => rewriteExports(EXPORTS_MEMORY, ["memory"]), /is a memory/);
  assert.throws(() => rewriteExports(EXPORTS_MEMORY, ["kc_sign"]), /missing/);
});
