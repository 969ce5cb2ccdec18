/**
 * packaging/keycell.service and the compile task: what operators rely on, checked without a
 * running systemd (`systemd-analyze verify` reads the unit offline when it is installed).
 */

import { assert, assertEquals } from "./_assert.ts";
import { permissionsOf } from "./_command.ts";
import { tempDir } from "./_temp.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const UNIT = `${ROOT}packaging/keycell.service`;

/** The unit's `Key=value` lines by section; a key given twice keeps both values, in order. */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const sections: Record<string, Record<string, string[]>> = {};
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      section = header[1];
      sections[section] ??= {};
      continue;
    }
    const at = line.indexOf("=");
    assert(section !== "" && at > 0, `a Key=value line in a section: ${line}`);
    (sections[section][line.slice(0, at)] ??= []).push(line.slice(at + 1));
  }
  return sections;
}

const unit = parseUnit(await Deno.readTextFile(UNIT));
const service = unit.Service;
const one = (key: string) => service[key]?.at(-1);

Deno.test("keycell.service: a dynamic user, its state in /var/lib/keycell, reload by SIGHUP, many descriptors", () => {
  assertEquals([one("DynamicUser"), one("StateDirectory"), one("StateDirectoryMode")], ["yes", "keycell", "0700"]);
  assert(service.Environment.includes("KEYCELL_DATA_DIR=/var/lib/keycell"), "the data directory is the state directory");
  assertEquals(one("ExecReload"), "/bin/kill -HUP $MAINPID");
  assert(Number(one("LimitNOFILE")) >= 65536, `LimitNOFILE=${one("LimitNOFILE")}`);
  assertEquals(one("KillSignal"), "SIGTERM");
  assertEquals(unit.Install.WantedBy, ["multi-user.target"]);
});

Deno.test("keycell.service: starts the binary deno task compile builds, with serve", () => {
  const task: string = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks.compile;
  const output = task.split(/\s+/)[task.split(/\s+/).indexOf("--output") + 1];
  assertEquals(output, "dist/keycell");
  assertEquals(one("ExecStart"), "/usr/local/bin/keycell serve");
});

Deno.test("keycell.service: hardened, without the options that break V8", () => {
  for (const [key, value] of Object.entries({ NoNewPrivileges: "yes", ProtectSystem: "strict", ProtectHome: "yes", PrivateTmp: "yes", PrivateDevices: "yes", CapabilityBoundingSet: "" })) {
    assertEquals(one(key), value, key);
  }
  // V8 writes the machine code it compiles (JavaScript and WebAssembly) into memory it then executes.
  assertEquals(service.MemoryDenyWriteExecute, undefined);
  assert(service.SystemCallFilter.every((f) => !f.includes("~@resources")), "V8 sizes itself from the limits it reads");
  assertEquals(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX", "TCP, and the process signer's Unix socket");
});

Deno.test("the compiled binary has the serve task's permissions and unstable flags", () => {
  const tasks: Record<string, string> = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks;
  const compile = tasks.compile.split(/\s+/);
  const serve = tasks.serve.split(/\s+/);
  for (const flag of serve.filter((w) => w.startsWith("--"))) assert(compile.includes(flag), `deno compile is given ${flag}`);
  // `keyserver` runs from the same binary in `process` mode.
  for (const flag of permissionsOf("keyserver")) assert(compile.includes(flag), `deno compile is given ${flag}`);
});

Deno.test({
  name: "keycell.service: systemd-analyze verify finds nothing to say",
  ignore: !(await Deno.stat("/usr/bin/systemd-analyze").then(() => true, () => false)),
  async fn() {
    // verify checks that ExecStart exists: point it at a binary that does.
    const dir = await tempDir("keycell-unit-");
    await Deno.writeTextFile(`${dir}/keycell.service`, (await Deno.readTextFile(UNIT)).replaceAll("/usr/local/bin/keycell", "/bin/true"));
    const out = await new Deno.Command("systemd-analyze", { args: ["verify", `${dir}/keycell.service`], stdout: "piped", stderr: "piped" }).output();
    const said = (new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr)).trim();
    assertEquals([out.code, said], [0, ""]);
  },
});
