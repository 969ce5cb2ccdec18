// The codes the host and the guest share are written in four places: the TypeScript tables, the
// Rust enums (rust-signer/src/codes.rs), the C enums (rust-signer/c/kc.h) and ABI.md. Adding a
// status, key spec or algorithm means adding it to each; this reads the other three as text and
// fails on any name or value that differs from the TypeScript tables.

import { assert, assertEquals, assertThrows } from "./_assert.ts";
import {
  ALGORITHM_CODES,
  FLAG_ECDSA_RAW_SIGNATURE,
  FLAG_RAW_MESSAGE,
  KEY_SPEC_CODES,
  Op,
  Status,
  WRAPPING_KEY_SPEC,
} from "../src/core/protocol.ts";

const ROOT = new URL("../rust-signer/", import.meta.url);
const RUST = Deno.readTextFileSync(new URL("src/codes.rs", ROOT));
const C = Deno.readTextFileSync(new URL("c/kc.h", ROOT));
const ABI = Deno.readTextFileSync(new URL("ABI.md", ROOT));
const SIGN_RS = Deno.readTextFileSync(new URL("src/sign.rs", ROOT));

type Codes = Record<string, number>;

/** `name = value` lines of one enum's body, found by `header` (`enum X {`). */
function enumBody(source: string, header: RegExp, what: string): Codes {
  const start = source.search(header);
  if (start < 0) throw new Error(`${what}: not found`);
  const open = source.indexOf("{", start);
  const body = source.slice(open + 1, source.indexOf("}", open)).replace(/\/\/.*$/gm, "");
  const codes: Codes = {};
  for (const line of body.split(/[,\n]/).map((l) => l.trim()).filter((l) => l !== "")) {
    const m = line.match(/^([A-Za-z0-9_]+)\s*=\s*(-?(?:0x)?[0-9a-fA-F]+)$/);
    if (!m) throw new Error(`${what}: cannot read ${JSON.stringify(line)}`);
    if (m[1] in codes) throw new Error(`${what}: ${m[1]} twice`);
    codes[m[1]] = Number(m[2]);
  }
  if (Object.keys(codes).length === 0) throw new Error(`${what}: empty`);
  return codes;
}

/** A Rust `pub(crate) enum Name { ... }` from codes.rs. */
function rustEnum(source: string, name: string): Codes {
  return enumBody(source, new RegExp(`pub\\(crate\\) enum ${name} \\{`), `Rust enum ${name}`);
}

/** A C `enum kc_name { KC_PREFIX_X = n, ... }`, its names without the prefix. */
function cEnum(source: string, name: string, prefix: string): Codes {
  const codes = enumBody(source, new RegExp(`enum kc_${name} \\{`), `C enum kc_${name}`);
  return Object.fromEntries(Object.entries(codes).map(([k, v]) => {
    if (!k.startsWith(prefix)) throw new Error(`C enum kc_${name}: ${k} lacks the prefix ${prefix}`);
    return [k.slice(prefix.length), v];
  }));
}

/** Sorted `name=value` strings, so a difference shows as the entries that differ. */
function entries(codes: Codes): string[] {
  return Object.entries(codes).map(([k, v]) => `${k}=${v}`).sort();
}

/** The TypeScript statuses the guest returns: the ones between OK and the compartment's own. */
const GUEST_STATUSES: Codes = Object.fromEntries(
  Object.entries(Status).filter(([, v]) => v > Status.OK && v < Status.GUEST_TRAPPED),
);

Deno.test("statuses: the Rust enum, the C enum (negated) and ABI.md match the TypeScript table", () => {
  assertEquals(entries(rustEnum(RUST, "Status")), entries(GUEST_STATUSES));
  const c = cEnum(C, "status", "KC_");
  assertEquals(entries(Object.fromEntries(Object.entries(c).map(([k, v]) => [k, -v]))), entries(GUEST_STATUSES));
  const abi: Codes = {};
  for (const [, code, name] of ABI.matchAll(/^\| (-\d+) \| ([A-Z_]+) \|/gm)) abi[name] = -Number(code);
  assertEquals(entries(abi), entries(GUEST_STATUSES));
});

Deno.test("key specs: the Rust enum, the C enum and ABI.md match the TypeScript table", () => {
  assertEquals(entries(rustEnum(RUST, "KeySpec")), entries(KEY_SPEC_CODES));
  assertEquals(entries(cEnum(C, "key_spec", "KC_SPEC_")), entries(KEY_SPEC_CODES));
  const line = ABI.split("\n").find((l) => l.startsWith("Key specs"));
  const abi: Codes = {};
  for (const [, code, name] of line?.matchAll(/`(\d+)` ([A-Z0-9_]+)/g) ?? []) abi[name] = Number(code);
  assertEquals(entries(abi), entries(KEY_SPEC_CODES));
  assertEquals(WRAPPING_KEY_SPEC, 0x80 | KEY_SPEC_CODES.RSA_4096);
});

Deno.test("algorithms: the Rust enum and ABI.md match the TypeScript table", () => {
  assertEquals(entries(rustEnum(RUST, "Algorithm")), entries(ALGORITHM_CODES));
  const abi: Codes = {};
  for (const [, code, name] of ABI.matchAll(/^\| (\d+) \| ([A-Z0-9_]+) \| (?:RSA|EC) \|/gm)) abi[name] = Number(code);
  assertEquals(entries(abi), entries(ALGORITHM_CODES));
});

Deno.test("sign flags: the Rust constants match the TypeScript ones", () => {
  const flag = (name: string) => Number(SIGN_RS.match(new RegExp(`const ${name}: u8 = (\\d+);`))?.[1]);
  assertEquals([flag("FLAG_RAW"), flag("FLAG_RS")], [FLAG_RAW_MESSAGE, FLAG_ECDSA_RAW_SIGNATURE]);
});

Deno.test("the wasmtime host's operations and statuses match the TypeScript tables", () => {
  const host = Deno.readTextFileSync(new URL("wasmtime-host/src/main.rs", ROOT));
  const constants = (prefix: string): Codes =>
    Object.fromEntries([...host.matchAll(new RegExp(`pub const ${prefix}_([A-Z_]+): u8 = (\\d+);`, "g"))].map(([, name, value]) => [name, Number(value)]));
  const ops = constants("OP");
  assertEquals(entries(ops), entries(Op), "every operation, with its value");
  const statuses = constants("STATUS");
  assert(Object.keys(statuses).length > 0);
  for (const [name, value] of Object.entries(statuses)) assertEquals(value, Status[name as keyof typeof Status], name);
});

Deno.test("codes only Rust and C share: hashes, schemes, DER forms and seal purposes match", () => {
  const shared = [
    ["Hash", "hash", "KC_HASH_"],
    ["Scheme", "scheme", "KC_SCHEME_"],
    ["Form", "form", "KC_FORM_"],
    ["Purpose", "purpose", "KC_PURPOSE_"],
  ];
  for (const [rust, c, prefix] of shared) {
    assertEquals(entries(cEnum(C, c, prefix)), entries(rustEnum(RUST, rust)), rust);
  }
});

Deno.test("positive control: drift in a value or a name, and a missing enum, are caught", () => {
  const drifted = RUST.replace("NO_MASTER_KEY = 9,", "NO_MASTER_KEY = 11,");
  assertThrows(() => assertEquals(entries(rustEnum(drifted, "Status")), entries(GUEST_STATUSES)));
  const renamed = C.replace("KC_SPEC_ECC_NIST_P384 = 5", "KC_SPEC_ECC_P384 = 5");
  assertThrows(() => assertEquals(entries(cEnum(renamed, "key_spec", "KC_SPEC_")), entries(KEY_SPEC_CODES)));
  const added = RUST.replace("ECDSA_MD5_SHA1 = 15,", "ECDSA_MD5_SHA1 = 15,\n        EDDSA = 16,");
  assertThrows(() => assertEquals(entries(rustEnum(added, "Algorithm")), entries(ALGORITHM_CODES)));
  assertThrows(() => rustEnum(RUST, "Nothing"), /not found/);
  assertThrows(() => cEnum(C, "status", "KC_SPEC_"), /lacks the prefix/);
});
