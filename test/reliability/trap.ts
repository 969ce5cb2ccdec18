/**
 * A guest trap under load: `serve` with fault injection on, clients signing all along, and
 * `POST /v1/faults/trap` making the guest trap now and then, in worker mode (a pool of guests)
 * and in process mode (the key server's). Only the trapping requests may fail, each with 500.
 *
 * @module
 */

import { assertEquals } from "../_assert.ts";
import { closedLoop, latencies, size, sleep, Tally } from "./_measure.ts";
import { serveWithKey } from "./_serve.ts";
import { recordRow } from "./_report.ts";

const CLIENTS = 4;

/** Runs the scenario and records its row. */
export async function guestTrap(): Promise<void> {
  const figures: string[] = [];
  const failures: Record<string, number> = {};
  const trapAnswers: Record<string, string[]> = {};
  for (const mode of ["worker", "process"]) {
    const { server, api, sign } = await serveWithKey({ KEYCELL_SIGNER: mode, KEYCELL_FAULT_INJECTION: "1" });
    try {
      const traps = size(5, 50);
      let stopping = false;
      const load = closedLoop(CLIENTS, () => sign(), () => stopping, new Tally());
      const answers: string[] = [];
      for (let i = 0; i < traps; i++) {
        await sleep(size(100, 200));
        const res = await api("POST", "/v1/faults/trap");
        answers.push(`${res.status} ${(await res.json()).error?.code}`);
      }
      await sleep(200);
      stopping = true;
      const tally = await load;
      failures[mode] = tally.failures;
      trapAnswers[mode] = answers;
      const kinds = [...new Set(answers)].map((a) => `${a} x${answers.filter((b) => b === a).length}`).join(", ");
      figures.push(`${mode} mode: ${traps} traps answered ${kinds}; ${CLIENTS} signing clients meanwhile: ${tally.describe()}, ${latencies(tally.good)}`);
    } finally {
      assertEquals(await server.stop(), 0);
    }
  }
  const ok = Object.values(failures).every((n) => n === 0) && Object.values(trapAnswers).flat().every((a) => a === "500 internal");
  await recordRow({ row: "trap", verdict: ok ? "pass" : "fail", figures });
  for (const mode of Object.keys(failures)) {
    assertEquals(failures[mode], 0, `${mode}: only the trapping requests fail\n${figures.join("\n")}`);
    assertEquals(new Set(trapAnswers[mode]), new Set(["500 internal"]), `${mode}: a trap answers 500 internal`);
  }
}
