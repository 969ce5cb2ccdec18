// The choice of guest (KEYCELL_GUEST, src/deno/guest.ts) and the compartment's
// known-answer self-test (src/guest/self_test.ts): `auto` runs the wide guest
// under V8's wide-arithmetic flag and the 32-bit one without it; a guest whose
// products go wrong is refused at start, and after a trap it stops signing.
// This test process runs without the flag; servers run with their task's
// flags (the serve task has it) or explicitly without.

import { match as assertMatch } from "node:assert/strict";
import { assert, assertEquals } from "./_assert.ts";
import { permissionsOf, startDeno, startServer } from "./_command.ts";
import { apiClient, generate, signAndVerify } from "./_server.ts";
import { Compartment } from "../src/guest/compartment.ts";
import { chooseGuest, WIDE_ARITHMETIC_FLAG } from "../src/deno/guest.ts";
import { loadConfig, parseConfigFile } from "../src/deno/config.ts";
import { encodeRequest, Op, Status } from "../src/core/protocol.ts";
import { tempDir } from "./_temp.ts";

const BASELINE = new URL("../wasm/signer.wasm", import.meta.url).pathname;
const WIDE = new URL("../wasm/signer-wide.wasm", import.meta.url).pathname;
const MAIN = new URL("../src/main.ts", import.meta.url).pathname;

/**
 * Runs `fn` with every guest instance made meanwhile flipping one bit of the first 8 bytes of
 * its next `count` signatures, through the `out_write8` import (a test-only wrapper around
 * WebAssembly.Instance; the compartment is unchanged).
 */
function corruptingSignatures<T>(count: number, fn: () => T): T {
  const Real = WebAssembly.Instance;
  let left = count;
  const Corrupting = function (
    module: WebAssembly.Module,
    imports: WebAssembly.Imports,
  ) {
    const keycell = imports.keycell as Record<
      string,
      (...args: never[]) => unknown
    >;
    let signing = false;
    const real = new Real(module, {
      keycell: {
        ...keycell,
        out_write8: (off: number, v: bigint) => {
          if (signing && off === 0 && left > 0) {
            left--;
            v ^= 1n;
          }
          return (keycell.out_write8 as (off: number, v: bigint) => void)(
            off,
            v,
          );
        },
      },
    });
    const exports = real.exports as Record<string, () => number>;
    return {
      exports: {
        ...exports,
        kc_sign: () => {
          signing = true;
          try {
            return exports.kc_sign();
          } finally {
            signing = false;
          }
        },
      },
    };
  };
  (WebAssembly as { Instance: unknown }).Instance = Corrupting;
  try {
    return fn();
  } finally {
    (WebAssembly as { Instance: unknown }).Instance = Real;
  }
}

function thrown(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  return "(nothing thrown)";
}

Deno.test("KEYCELL_GUEST: baseline by default, one of auto, wide, baseline, also in a config file", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  assertEquals(loadConfig(env({})).guest, "baseline");
  for (const guest of ["auto", "wide", "baseline"] as const) {
    assertEquals(loadConfig(env({ KEYCELL_GUEST: guest })).guest, guest);
  }
  assertEquals(parseConfigFile('{"KEYCELL_GUEST": "auto"}', "keycell.json"), { KEYCELL_GUEST: "auto" });
  assertMatch(
    thrown(() => parseConfigFile('{"KEYCELL_GUEST": "fast"}', "keycell.json")),
    /^keycell\.json: KEYCELL_GUEST must be one of auto, wide, baseline/,
  );
  assertMatch(
    thrown(() => loadConfig(env({ KEYCELL_GUEST: "fast" }))),
    /^KEYCELL_GUEST must be one of auto, wide, baseline/,
  );
  assertEquals(loadConfig(env({})).wideWasmPath, WIDE);
});

Deno.test("serve and keyserver tasks carry the wide-arithmetic flag; the key server child gets it too", () => {
  for (const command of ["serve", "keyserver"] as const) {
    assertEquals(
      permissionsOf(command).includes(WIDE_ARITHMETIC_FLAG),
      true,
      command,
    );
  }
  const source = Deno.readTextFileSync(
    new URL("../src/deno/process_transport.ts", import.meta.url),
  );
  assert(source.includes(`"${WIDE_ARITHMETIC_FLAG}"`));
});

Deno.test("without the flag: auto picks the 32-bit guest and says why, wide refuses", () => {
  assertEquals(
    WebAssembly.validate(Deno.readFileSync(WIDE)),
    false,
    "this test runs without the flag",
  );
  const config = {
    wasmPath: BASELINE,
    wideWasmPath: WIDE,
    wasmOverridden: false,
  };
  const auto = chooseGuest({ ...config, guest: "auto" });
  assertEquals([auto.guest, auto.description], [
    "baseline",
    "guest: baseline (wide arithmetic unavailable)",
  ]);
  assertEquals(auto.wasm, Deno.readFileSync(BASELINE));
  assertMatch(
    thrown(() => chooseGuest({ ...config, guest: "wide" })),
    /^KEYCELL_GUEST=wide: wide arithmetic unavailable; run deno with --v8-flags=/,
  );
  assertEquals(
    chooseGuest({ ...config, guest: "baseline" }).description,
    "guest: baseline",
  );
});

Deno.test("self-test: a guest that corrupts one signature is refused; clean, it passes", () => {
  const wasm = new WebAssembly.Module(Deno.readFileSync(BASELINE));
  assertMatch(
    corruptingSignatures(1, () => thrown(() => Compartment.create({ wasm }))),
    /^the guest failed its self-test: RSA-2048 PKCS#1 v1\.5: wrong signature$/,
  );
  Compartment.create({ wasm }); // the control: the same module, uncorrupted
  // auto falls back when the candidate fails its self-test (the 32-bit module stands in for the
  // wide one, which this process cannot run); wide refuses to start.
  const config = {
    wasmPath: BASELINE,
    wideWasmPath: BASELINE,
    wasmOverridden: false,
  };
  const auto = corruptingSignatures(
    1,
    () => chooseGuest({ ...config, guest: "auto" }),
  );
  assertEquals(
    auto.description,
    "guest: baseline (the guest failed its self-test: RSA-2048 PKCS#1 v1.5: wrong signature)",
  );
  assertMatch(
    corruptingSignatures(
      1,
      () => thrown(() => chooseGuest({ ...config, guest: "wide" })),
    ),
    /^KEYCELL_GUEST=wide: the guest failed its self-test/,
  );
});

Deno.test("self-test: the test keys are dropped; after a trap a re-created guest that fails it signs nothing", () => {
  const compartment = Compartment.create({ wasm: Deno.readFileSync(BASELINE) });
  const list = compartment.handle(encodeRequest(Op.LIST));
  assertEquals([...list], [Status.OK, 0, 0, 0, 0], "no key left in the guest");
  // The trap re-creates the guest, whose self-test now fails: the caller hears it (the workerd
  // signer drops the compartment on it), and the compartment signs nothing more.
  assertMatch(
    corruptingSignatures(1, () => thrown(() => compartment.handle(encodeRequest(Op.TRAP)))),
    /self-test: RSA-2048 PKCS#1 v1\.5: wrong signature/,
  );
  assertEquals(
    compartment.handle(encodeRequest(Op.LIST))[0],
    Status.UNAVAILABLE,
  );
  assertEquals(
    compartment.handle(encodeRequest(Op.HEALTH))[0],
    Status.UNAVAILABLE,
  );
});

/** Generates an RSA-2048 and a P-256 key on `server` and checks a signature of each way with openssl and WebCrypto. */
async function signsWithEveryFamily(server: { url: string }, dataDir: string): Promise<void> {
  const api = apiClient(server, (await Deno.readTextFile(`${dataDir}/admin.token`)).trim());
  const dir = await tempDir();
  for (const spec of ["RSA_2048", "ECC_NIST_P256"] as const) await signAndVerify(api, await generate(api, spec, dir));
}

Deno.test("serve: the 32-bit guest by default; auto runs the wide guest for RSA keys and the 32-bit one for EC keys under the flag, the 32-bit one alone without it", async () => {
  const dir = await tempDir();
  {
    const byDefault = await startServer({ dataDir: `${dir}/default`, env: { KEYCELL_SIGNER: "inline" } });
    try {
      assertMatch(
        byDefault.lines.join("\n"),
        /keycell ready on \S+ \(signer: inline, guest: baseline, keys: 0\)/,
      );
    } finally {
      await byDefault.stop();
    }
    const wide = await startServer({ dataDir: `${dir}/a`, env: { KEYCELL_GUEST: "auto" } });
    try {
      assertMatch(
        wide.lines.join("\n"),
        /keycell ready on \S+ \(signer: worker, guest: wide for RSA and baseline for EC, keys: 0\)/,
      );
      await signsWithEveryFamily(wide, `${dir}/a`);
    } finally {
      await wide.stop();
    }
    const flags = permissionsOf("serve").filter((f) =>
      f !== WIDE_ARITHMETIC_FLAG
    );
    const baseline = await startDeno({
      args: [...flags, MAIN, "serve"],
      env: {
        KEYCELL_DATA_DIR: `${dir}/b`,
        KEYCELL_LISTEN: "127.0.0.1:0",
        KEYCELL_SIGNER: "inline",
        KEYCELL_GUEST: "auto",
      },
      ready: /keycell ready on/,
    });
    try {
      assertMatch(
        baseline.lines.join("\n"),
        /\(signer: inline, guest: baseline \(wide arithmetic unavailable\), keys: 0\)/,
      );
    } finally {
      await baseline.stop();
    }
  }
});

Deno.test("serve in process mode: the key server it starts chooses the guest from the same KEYCELL_GUEST and names it", async () => {
  const dir = await tempDir();
  for (const [guest, named] of [["auto", "wide for RSA and baseline for EC"], ["", "baseline"]] as const) {
    const env: Record<string, string> = { KEYCELL_SIGNER: "process" };
    if (guest !== "") env.KEYCELL_GUEST = guest;
    const server = await startServer({ dataDir: `${dir}/${guest || "default"}`, env });
    try {
      assertMatch(
        server.lines.join("\n"),
        new RegExp(`keycell ready on \\S+ \\(signer: process, guest: ${named}, keys: 0\\)`),
      );
    } finally {
      await server.stop();
    }
  }
});

Deno.test("a wide guest with one wrong multiply is refused: ECDSA by its own verification, RSA by BoringSSL's check", async () => {
  // Sites of wasm/signer-wide.wasm (pinned by its SHA-256) found with `test/_wide_fault.ts scan`:
  // with the multiply at 925 made signed the P-256 key still loads with the right public point,
  // but its signature fails the guest's verification; at 950, the RSA private transform's result
  // fails BoringSSL's check with the public exponent. Neither answers a signature.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", "--allow-read", WIDE_ARITHMETIC_FLAG, new URL("_wide_fault.ts", import.meta.url).pathname, "925", "950"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assertEquals(out.code, 0);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
  assertEquals(lines, [
    { site: 925, outcome: "the guest failed its self-test: P-256: sign answered -6" },
    { site: 950, outcome: "the guest failed its self-test: RSA-2048 PKCS#1 v1.5: sign answered -6" },
  ]);
});
