import { assert, assertEquals } from "../../test/_assert.ts";
import { catchLog } from "../../test/_log.ts";
import { formatLogRecord, getLog, parseLogLine } from "./log.ts";

Deno.test("log, text: today's lines, `<category>: <message>`, and `keycell ready on ...`; warnings and errors to stderr", async () => {
  const lines = await catchLog(() => {
    getLog().info("ready on http://127.0.0.1:8787 (signer: worker)", { url: "http://127.0.0.1:8787" });
    getLog("keyserver").info("created the master key .keycell/master.key; back it up", { file: ".keycell/master.key" });
    getLog("keyserver").warn("skipped notes.txt: not a supported private key {file}");
    getLog().error("cannot start: no store");
  });
  assertEquals(lines, [
    { line: "keycell ready on http://127.0.0.1:8787 (signer: worker)", toError: false },
    { line: "keycell keyserver: created the master key .keycell/master.key; back it up", toError: false },
    { line: "keycell keyserver: skipped notes.txt: not a supported private key {file}", toError: true },
    { line: "keycell: cannot start: no store", toError: true },
  ]);
});

Deno.test("log, json: one object per line with time, level, category, message and fields", async () => {
  const lines = await catchLog(() => {
    getLog().debug("looked", { keys: 2 });
    getLog("keyserver").info("ready on unix:/tmp/k.sock", { listeners: ["unix:/tmp/k.sock"] });
    getLog().warn("a {brace} in a message");
  }, { format: "json" });
  const records = lines.map(({ line }) => {
    assert(!line.includes("\n"), line);
    return JSON.parse(line);
  });
  assertEquals(records.map((r) => [r.level, r.category, r.message, r.fields]), [
    ["debug", "keycell", "looked", { keys: 2 }],
    ["info", "keycell.keyserver", "ready on unix:/tmp/k.sock", { listeners: ["unix:/tmp/k.sock"] }],
    ["warning", "keycell", "a {brace} in a message", {}],
  ]);
  for (const r of records) assert(!Number.isNaN(Date.parse(r.time)) && r.time.endsWith("Z"), r.time);
});

Deno.test("log: the level drops what is below it", async () => {
  const log = () => {
    getLog().debug("d");
    getLog().info("i");
    getLog().warn("w");
    getLog().error("e");
  };
  const at = async (level: "debug" | "info" | "warning" | "error") => (await catchLog(log, { level })).map((l) => l.line.slice(-1));
  assertEquals(await at("debug"), ["d", "i", "w", "e"]);
  assertEquals(await at("info"), ["i", "w", "e"]);
  assertEquals(await at("warning"), ["w", "e"]);
  assertEquals(await at("error"), ["e"]);
});

Deno.test("log: an error's stack is written at the error level only", async () => {
  const error = new Error("boom");
  for (const format of ["text", "json"] as const) {
    const [warned, failed] = await catchLog(() => {
      getLog().warn("retrying", { error });
      getLog().error("unexpected error", { error });
    }, { format });
    assert(!warned.line.includes("    at "), warned.line);
    assert(failed.line.includes("    at "), failed.line);
    if (format === "text") assertEquals(warned.line, "keycell: retrying: Error: boom");
    else assertEquals(JSON.parse(warned.line).fields.error, { name: "Error", message: "boom" });
  }
});

Deno.test("log: a json line reads back as its record; other lines do not", async () => {
  const [caught] = await catchLog(() => getLog("keyserver").error("failed", { error: new Error("boom"), n: 1 }), { format: "json" });
  const record = parseLogLine(caught.line)!;
  assertEquals([record.category, record.level, record.properties.n], [["keycell", "keyserver"], "error", 1]);
  assert(formatLogRecord(record, "text").startsWith("keycell keyserver: failed: Error: boom\n    at "));
  assertEquals(formatLogRecord(record, "json"), caught.line);
  for (const other of ["keycell: hi", "{not json", '{"level":"info"}', "[1]", ""]) assertEquals(parseLogLine(other), undefined, other);
});

Deno.test("log: nothing is written before a platform configures the log", () => {
  const printed: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = console.error = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    getLog().error("unconfigured");
  } finally {
    [console.log, console.error] = [log, error];
  }
  assertEquals(printed, []);
});
