import { assert, assertEquals } from "./_assert.ts";
import { buildGuestFuzzer, runGuestFuzzer, unknownGuestAnswers } from "./_guest_fuzz.ts";
import { tempDir } from "./_temp.ts";

Deno.test("guest fuzzer: a bounded run over every export finds no crash or hang, and every answer is a length or a status", async () => {
  await buildGuestFuzzer();
  const dir = await tempDir("keycell-fuzz-guest-");
  try {
    const report = await runGuestFuzzer({ runs: 20_000, maxSeconds: 120, seed: 1, corpus: `${dir}/corpus`, artifacts: `${dir}/artifacts` });
    assertEquals([report.crashes, report.hangs, report.artifacts], [0, 0, []], report.tail);
    assertEquals(report.exitCode, 0, report.tail);
    assertEquals(report.runs, 20_000, report.tail);
    assert(report.edges > 1000, `coverage reached ${report.edges} edges`);
    const exports = new Set(Object.keys(report.answers).map((a) => a.split(":")[0]));
    assertEquals(exports.size, 15, `every export but kc_trap was called: ${[...exports]}`);
    assertEquals(unknownGuestAnswers(report.answers), []);
    for (const ok of ["kc_sign:ok", "kc_unseal:ok", "kc_verify:ok"]) {
      assert((report.answers[ok] ?? 0) > 0, `${ok}: ${JSON.stringify(report.answers)}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// The token comes through libFuzzer's dictionary, as a protocol's magic values would: the control
// shows that mutated inputs reach a valid signature and that a panic there is caught and kept.
Deno.test("guest fuzzer: the positive control, a crash planted behind a valid signature, is found and saved", async () => {
  await buildGuestFuzzer();
  const dir = await tempDir("keycell-fuzz-guest-");
  try {
    const report = await runGuestFuzzer({ runs: 300_000, maxSeconds: 60, seed: 1, corpus: `${dir}/corpus`, artifacts: `${dir}/artifacts`, plantedCrash: true, dictionary: ["kc!!"] });
    assertEquals(report.crashes, 1, report.tail);
    assertEquals(report.panic, "planted crash: a valid signature over a message holding kc!!", report.tail);
    assertEquals(report.artifacts.length, 1);
    const input = await Deno.readFile(report.artifacts[0]);
    assertEquals(input[0] % 15, 3, "the crashing input is a kc_sign request");
    assert(new TextDecoder().decode(input.slice(35)).includes("kc!!"), "the message holds the planted token");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
