import { assert, assertEquals, assertRejects } from "../../test/_assert.ts";
import { startServer } from "../../test/_command.ts";
import { tempDir } from "../../test/_temp.ts";
import { SPINNER_CLEAR, SPINNER_FRAMES, type SpinnerOutput, withSpinner } from "./spinner.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** An output that keeps what is written, and tells `onWrite` after each write. */
function fakeOutput(terminal: boolean, onWrite: (writes: string[]) => void = () => {}): SpinnerOutput & { writes: string[] } {
  const writes: string[] = [];
  return {
    writes,
    isTerminal: () => terminal,
    writeSync(bytes) {
      writes.push(new TextDecoder().decode(bytes));
      onWrite(writes);
      return bytes.length;
    },
  };
}

Deno.test("spinner: not a terminal, nothing is written; the work's result or error passes through", async () => {
  const output = fakeOutput(false);
  assertEquals(await withSpinner("generating RSA_4096", Promise.resolve("key"), output, 1), "key");
  await assertRejects(withSpinner("generating RSA_4096", Promise.reject(new Error("refused")), output, 1), /refused/);
  assertEquals(output.writes, []);
});

Deno.test("spinner: on a terminal, its frames in turn with the label, then the line erased before the result", async () => {
  for (const outcome of ["resolve", "reject"] as const) {
    let settle!: () => void;
    let drawnThrice!: () => void;
    const thrice = new Promise<void>((resolve) => drawnThrice = resolve);
    const output = fakeOutput(true, (writes) => writes.length === 3 && drawnThrice());
    const work = new Promise<string>((resolve, reject) => settle = () => outcome === "resolve" ? resolve("key") : reject(new Error("refused")));
    const spinning = withSpinner("generating RSA_4096", work, output, 1);
    await thrice;
    settle();
    if (outcome === "resolve") assertEquals(await spinning, "key");
    else await assertRejects(spinning, /refused/);
    const frames = output.writes.slice(0, -1);
    assert(frames.length >= 3, output.writes.join("|"));
    frames.forEach((w, i) => assertEquals(w, `${SPINNER_CLEAR}${SPINNER_FRAMES[i % SPINNER_FRAMES.length]} generating RSA_4096`));
    assertEquals(output.writes.at(-1), SPINNER_CLEAR, "erased last");
  }
});

/** `keycell keys <args>` against `url`, its output piped, or through `script` on a pseudo-terminal. */
async function keysCommand(url: string, token: string, args: string[], terminal: boolean): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = [Deno.execPath(), "run", "--allow-read", "--allow-write", "--allow-env", "--allow-net", MAIN, "keys", ...args];
  const quoted = argv.map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const out = await new Deno.Command(terminal ? "script" : argv[0], {
    // script: -q no banner, -e its exit code is the command's, -c the command; the typescript file is none.
    args: terminal ? ["-qec", quoted, "/dev/null"] : argv.slice(1),
    env: { KEYCELL_URL: url, KEYCELL_TOKEN: token, NO_COLOR: "1" },
    stdin: "null",
  }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr: new TextDecoder().decode(out.stderr) };
}

/** Whether `text` holds a control character other than the newline. */
function hasControl(text: string): boolean {
  return [...text].some((c) => c !== "\n" && (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f));
}

const HAS_SCRIPT = new Deno.Command("script", { args: ["--version"], stdout: "null", stderr: "null" }).output().then((o) => o.success, () => false);

Deno.test({
  name: "keycell keys create: a spinner on a terminal, erased before the key; none through a pipe or with --json",
  ignore: !(await HAS_SCRIPT),
  async fn() {
    const dataDir = await tempDir("keycell-spinner-");
    const server = await startServer({ dataDir, env: { KEYCELL_SIGNER: "inline" } });
    try {
      const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
      // A pipe: the key line alone, and no control character anywhere.
      const piped = await keysCommand(server.url, token, ["create", "ECC_NIST_P256"], false);
      assertEquals([piped.code, piped.stderr], [0, ""], piped.stderr);
      assert(/^[0-9a-f]{64} {2}ECC_NIST_P256\n$/.test(piped.stdout), piped.stdout);
      assert(!hasControl(piped.stdout), JSON.stringify(piped.stdout));

      // A terminal (stdout and stderr both on it): frames, then the erase, then the key line.
      const shown = await keysCommand(server.url, token, ["create", "ECC_NIST_P256"], true);
      assertEquals(shown.code, 0, shown.stdout);
      assert(shown.stdout.startsWith(`${SPINNER_CLEAR}${SPINNER_FRAMES[0]} generating ECC_NIST_P256`), JSON.stringify(shown.stdout));
      const after = shown.stdout.slice(shown.stdout.lastIndexOf(SPINNER_CLEAR) + SPINNER_CLEAR.length);
      assert(/^[0-9a-f]{64} {2}ECC_NIST_P256\r\n$/.test(after), JSON.stringify(shown.stdout));

      // --json on a terminal: the JSON alone.
      const json = await keysCommand(server.url, token, ["create", "ECC_NIST_P256", "--json"], true);
      assertEquals(json.code, 0, json.stdout);
      assert(!hasControl(json.stdout.replaceAll("\r\n", "\n")), JSON.stringify(json.stdout));
      assertEquals(JSON.parse(json.stdout).keySpec, "ECC_NIST_P256");
    } finally {
      assertEquals(await server.stop(), 0);
    }
  },
});
