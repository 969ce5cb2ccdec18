/**
 * The API reference page (`GET /docs`) as a browser shows it: headless Chromium (Debian's
 * package, installed by scripts/chromium-test.sh when missing) loads the page from a real
 * `keycell serve`, runs its script under the page's Content-Security-Policy, and the rendered DOM
 * must hold every route of `/openapi.json`.
 */

import { assert, assertEquals } from "./_assert.ts";
import { startServer } from "./_command.ts";
import { tempDir } from "./_temp.ts";

const INSTALL = new URL("../scripts/chromium-test.sh", import.meta.url).pathname;

/** Long enough for the page to fetch and render the description; virtual time, not a wait. */
const VIRTUAL_TIME_BUDGET_MS = 10_000;

/** Chromium's path, installing it first when it is missing. */
async function chromium(): Promise<string> {
  const out = await new Deno.Command("bash", { args: [INSTALL, "path"], stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`no Chromium: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout).trim();
}

/** The DOM of `url` once its scripts have run, and the page's console lines. */
async function renderedDom(url: string): Promise<{ dom: string; console: string[] }> {
  const profile = await tempDir("keycell-chromium-");
  try {
    const out = await new Deno.Command(await chromium(), {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${profile}`,
        "--enable-logging=stderr",
        "--v=0",
        `--virtual-time-budget=${VIRTUAL_TIME_BUDGET_MS}`,
        "--dump-dom",
        url,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert(out.success, `chromium exited with ${out.code}:\n${stderr}`);
    return { dom: new TextDecoder().decode(out.stdout), console: stderr.split("\n").filter((l) => l.includes(":CONSOLE")) };
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}

/** The text of an HTML fragment, tags dropped and the entities the DOM serializer writes decoded. */
function textOf(html: string): string {
  return html.replace(/<[^>]*>/g, "").replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"').replaceAll("&amp;", "&");
}

type Parameter = { name: string; in: string; schema: { pattern?: string } };
type Description = {
  paths: Record<string, Record<string, { operationId: string; summary: string; parameters?: Parameter[]; responses: Record<string, unknown> }>>;
};

Deno.test("GET /docs: Chromium renders every route of /openapi.json, offline, under the page's Content-Security-Policy", async () => {
  const server = await startServer({ dataDir: await tempDir("keycell-docs-"), env: { KEYCELL_SIGNER: "inline" } });
  try {
    const page = await fetch(`${server.url}/docs`);
    assertEquals(page.status, 200);
    assert(page.headers.get("Content-Type")!.startsWith("text/html"));
    const csp = page.headers.get("Content-Security-Policy") ?? "";
    for (const directive of ["default-src 'none'", "script-src 'self'", "connect-src 'self'"]) assert(csp.includes(directive), csp);
    assert(!csp.includes("unsafe"), csp);
    // The page loads nothing from anywhere but keycell.
    assert(!/(src|href)="(https?:)?\/\//.test(await page.text()), "the page names no other origin");

    const doc: Description = await (await fetch(`${server.url}/openapi.json`)).json();
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })));
    assert(operations.length >= 20, `${operations.length} operations`);

    const { dom, console } = await renderedDom(`${server.url}/docs`);
    assertEquals(console, [], "the page logs nothing: no CSP violation, no script error");
    assert(dom.includes('<body data-state="ready">'), dom.slice(0, 2000));

    const sections = new Map<string, string>();
    for (const match of dom.matchAll(/<section class="operation" id="op-([A-Za-z0-9]+)"[^>]*>([\s\S]*?)<\/section>/g)) {
      sections.set(match[1], textOf(match[2]));
    }
    assertEquals([...sections.keys()].sort(), operations.map(({ op }) => op.operationId).sort(), "one section per operation");
    for (const { path, method, op } of operations) {
      const text = sections.get(op.operationId)!;
      const where = `${method.toUpperCase()} ${path}`;
      assert(text.startsWith(`${method.toUpperCase()} ${path}`), `${where}: heading\n${text.slice(0, 200)}`);
      assert(text.includes(op.summary), `${where}: summary`);
      assert(text.includes(path.startsWith("/v1/") || path === "/metrics" ? "Auth: bearer token." : "Auth: none."), `${where}: auth`);
      for (const status of Object.keys(op.responses)) assert(text.includes(status), `${where}: response ${status}`);
      const id = op.parameters?.find((p) => p.in === "path" && p.name === "id");
      if (path.includes("{id}")) assert(id?.schema.pattern !== undefined && text.includes(id.schema.pattern), `${where}: the id parameter's schema`);
    }
    assert(sections.get("postV1KeysIdSign")!.includes("ECDSA_SHA_256"), "request bodies are rendered");
  } finally {
    assertEquals(await server.stop(), 0);
  }
});
