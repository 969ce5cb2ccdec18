import { assert, assertEquals } from "../../test/_assert.ts";
import { AuditLog } from "./audit_log.ts";
import type { AuditRecord } from "../host/audit.ts";
import { Metrics } from "../host/metrics.ts";
import { tempDir } from "../../test/_temp.ts";

async function readRecords(path: string): Promise<AuditRecord[]> {
  const text = await Deno.readTextFile(path);
  return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line));
}

Deno.test("audit log: records in order, written on close, appended across opens, mode 0600", async () => {
  const dir = await tempDir("keycell-audit-");
  try {
    const path = `${dir}/audit.log`;
    const record = (n: number): AuditRecord => ({ time: new Date(n).toISOString(), requestId: `r${n}`, method: "GET", route: "/v1/keys", status: 200, ms: n });
    const first = AuditLog.open(path);
    for (let n = 0; n < 3000; n++) first.record(record(n));
    await first.close();
    const second = AuditLog.open(path);
    second.record(record(3000));
    await second.close();
    assertEquals((await readRecords(path)).map((r) => r.ms), Array.from({ length: 3001 }, (_, n) => n));
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit log: reopen after a rotation moved the file writes to a new file", async () => {
  const dir = await tempDir("keycell-audit-");
  try {
    const path = `${dir}/audit.log`;
    const record = (ms: number): AuditRecord => ({ time: new Date().toISOString(), requestId: "r", method: "GET", route: "/v1/keys", status: 200, ms });
    const audit = AuditLog.open(path);
    audit.record(record(1));
    await Deno.rename(path, `${path}.1`);
    audit.record(record(2));
    await audit.reopen();
    audit.record(record(3));
    await audit.close();
    assertEquals((await readRecords(`${path}.1`)).map((r) => r.ms), [1, 2], "what was queued before the reopen");
    assertEquals((await readRecords(path)).map((r) => r.ms), [3]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("audit log: a write that fails is counted and reported, and the log keeps taking records", async () => {
  const metrics = new Metrics();
  // Every write to /dev/full fails with ENOSPC.
  const audit = AuditLog.open("/dev/full", metrics);
  const errors: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => errors.push(args.join(" "));
  try {
    audit.record({ time: new Date().toISOString(), requestId: "r", method: "GET", route: "/v1/keys", status: 200, ms: 1 });
    await audit.flush();
    audit.record({ time: new Date().toISOString(), requestId: "r", method: "GET", route: "/v1/keys", status: 200, ms: 1 });
    await audit.close();
  } finally {
    console.error = consoleError;
  }
  assertEquals(errors.length, 2, errors.join("\n"));
  assert(errors[0].startsWith("keycell: audit log write failed"), errors[0]);
  const text = await metrics.render();
  assert(text.includes("\nkeycell_audit_write_failures_total 2\n"), text);
});
