/**
 * keycell's reliability scenarios, one test per row of reports/reliability.md: short runs here
 * (seconds each), full size with KEYCELL_RELIABILITY_FULL=1 (`deno task reliability`, which also
 * writes the report). Each scenario asserts what its row must show that is not a time: counts of
 * failures by kind, statuses, keys that sign afterwards, memory and descriptor bounds. Latencies
 * and throughput are measured and written to the report, not asserted.
 */

import { idleAndSlowloris } from "./reliability/idle.ts";
import { loopUnavailable } from "./reliability/_loopfs.ts";
import { recordRow } from "./reliability/_report.ts";
import { killKeyserver } from "./reliability/kill.ts";
import { memoryBounds } from "./reliability/memory.ts";
import { overload } from "./reliability/overload.ts";
import { frozenDataDir } from "./reliability/freeze.ts";
import { fuzzing } from "./reliability/fuzz.ts";
import { guestTrap } from "./reliability/trap.ts";
import { pipelining } from "./reliability/pipelining.ts";
import { rotationBesideNodes } from "./reliability/rotation.ts";
import { soak } from "./reliability/soak.ts";
import { storeFailures } from "./reliability/store.ts";
import { upgradeAndSigterm } from "./reliability/upgrade.ts";

Deno.test("reliability: idle and slowloris connections beside a signing client", idleAndSlowloris);
Deno.test("reliability: overload at four times saturation, HTTP and Keyless", overload);
Deno.test("reliability: one connection pipelining beside a second client, Keyless (TCP, TLS) and HTTP", pipelining);
Deno.test("reliability: kill -9 of the key server (process mode) under load", killKeyserver);
Deno.test("reliability: guest traps under load, worker and process mode", guestTrap);
Deno.test("reliability: upgrade of serve and SIGTERM under load", upgradeAndSigterm);
const noLoop = loopUnavailable();
if (noLoop !== undefined) await recordRow({ row: "freeze", verdict: "not run", figures: [], note: `not run here: ${noLoop}` });
Deno.test({ name: "reliability: the data directory frozen (fsfreeze on a loop device) under load", ignore: noLoop !== undefined, fn: frozenDataDir });
Deno.test("reliability: PostgreSQL stopped and started, the data directory full or read-only, under load", storeFailures);
Deno.test("reliability: one-byte chunks, clients that never read, 3,000 pipelined Keyless requests", memoryBounds);
Deno.test("reliability: master-key rotation beside two nodes generating keys", rotationBesideNodes);
Deno.test("reliability: fuzzing the Keyless frames, the HTTP API and the guest ABI side by side", fuzzing);
Deno.test("reliability: soak of mixed operations: 0 errors, RSS flat", soak);
