/**
 * The folders of src/ are layers, and imports run one way: down. This test reads every
 * production module's imports and fails on one that runs the wrong way, on a cycle between
 * folders, and on platform APIs in the platform-neutral core. docs/architecture.md draws the
 * same picture.
 */

import { assertEquals } from "./_assert.ts";

const SRC = new URL("../src/", import.meta.url);

/** Which folders each folder may import from (itself included). `main.ts` is the entry point. */
export const LAYERS: Record<string, readonly string[]> = {
  core: ["core"],
  guest: ["core", "guest"],
  host: ["core", "host"],
  keyless: ["core", "keyless"],
  client: ["core", "client"],
  deno: ["core", "guest", "host", "keyless", "deno"],
  workerd: ["core", "guest", "host", "keyless", "workerd"],
  deploy: ["core", "guest", "host", "deno", "deploy"],
  cli: ["core", "guest", "host", "keyless", "client", "deno", "cli"],
  "main.ts": ["core", "guest", "host", "keyless", "client", "deno", "cli"],
};

const ENTRY_POINT = new URL("main.ts", SRC);

/** The line that names a specifier. */
function importLineOf(source: string, spec: string): string {
  return source.split("\n").find((line) => line.includes(`"${spec}"`) || line.includes(`'${spec}'`)) ?? "";
}

/** Module specifiers a file names: static and dynamic imports, re-exports, and module URLs. */
function specifiers(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\s[^"';]*?\sfrom\s*["']([^"']+)["']/g,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\(\s*["']([^"']+)["']\s*\)/g,
    /\bnew URL\(\s*["'](\.[^"']+\.ts)["']\s*,\s*import\.meta\.url\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of source.matchAll(pattern)) found.push(match[1]);
  return found;
}

interface Module {
  /** Path below src/, such as `host/app.ts`. */
  path: string;
  source: string;
}

async function productionModules(): Promise<Module[]> {
  const out: Module[] = [];
  async function walk(dir: URL, prefix: string) {
    for await (const entry of Deno.readDir(dir)) {
      const path = prefix + entry.name;
      if (entry.isDirectory) await walk(new URL(`${entry.name}/`, dir), `${path}/`);
      else if (path.endsWith(".ts") && !path.endsWith("_test.ts")) {
        out.push({ path, source: await Deno.readTextFile(new URL(path, SRC)) });
      }
    }
  }
  await walk(SRC, "");
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

/** The layer of a path below src/: its first folder, or the file itself at the top. */
function layerOf(path: string): string {
  return path.includes("/") ? path.slice(0, path.indexOf("/")) : path;
}

/** Every import that runs the wrong way, as `from -> to` lines. */
export function wrongWayImports(modules: readonly Module[]): string[] {
  const wrong: string[] = [];
  for (const { path, source } of modules) {
    const layer = layerOf(path);
    const allowed = LAYERS[layer];
    for (const spec of specifiers(source)) {
      if (!spec.startsWith(".")) continue;
      const target = new URL(spec, new URL(path, SRC)).href;
      // A transport may start the entry point as a child process: that runs it, it imports nothing.
      if (target === ENTRY_POINT.href && !/\bfrom\s*["']|import\(/.test(importLineOf(source, spec))) continue;
      if (!target.startsWith(SRC.href)) {
        wrong.push(`${path} -> ${spec} (outside src/)`);
        continue;
      }
      const targetLayer = layerOf(target.slice(SRC.href.length));
      if (allowed === undefined || !allowed.includes(targetLayer)) wrong.push(`${path} -> ${spec}`);
    }
  }
  return wrong;
}

Deno.test("layers: every import in src/ runs down the layers, none outside src/", async () => {
  assertEquals(wrongWayImports(await productionModules()), []);
});

Deno.test("layers: every folder of src/ has a layer, and the layers form no cycle", async () => {
  const folders = new Set((await productionModules()).map((m) => layerOf(m.path)));
  assertEquals([...folders].filter((f) => !(f in LAYERS)), []);
  // A layer may import only layers listed before it in a topological order.
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = (layer: string) => {
    if (order.includes(layer)) return;
    if (visiting.has(layer)) throw new Error(`cycle through ${layer}`);
    visiting.add(layer);
    for (const below of LAYERS[layer]) if (below !== layer) visit(below);
    visiting.delete(layer);
    order.push(layer);
  };
  for (const layer of Object.keys(LAYERS)) visit(layer);
  assertEquals(order.length, Object.keys(LAYERS).length);
});

Deno.test("layers: the core uses no platform API (Deno.*, node:fs, node:net, files)", async () => {
  const found = (await productionModules())
    .filter((m) => layerOf(m.path) === "core")
    .flatMap(({ path, source }) =>
      [...source.matchAll(/\bDeno\.\w+|["']node:(?:fs|net|tls|child_process|process|os)[^"']*["']|import\.meta\.url/g)]
        .map((m) => `${path}: ${m[0]}`)
    );
  assertEquals(found, []);
});

Deno.test("layers: the checker catches a wrong-way import and a platform call (positive control)", () => {
  const modules = [
    { path: "core/x.ts", source: `import { app } from "../host/app.ts";` },
    { path: "host/y.ts", source: `import type { Compartment } from "../guest/compartment.ts";\nimport "../core/errors.ts";` },
    { path: "keyless/z.ts", source: `export { a } from "../host/a.ts";` },
    { path: "guest/w.ts", source: `const m = await import("../deno/signer.ts");` },
    { path: "deno/v.ts", source: `const u = new URL("../../test/_assert.ts", import.meta.url);` },
  ];
  assertEquals(wrongWayImports(modules), [
    "core/x.ts -> ../host/app.ts",
    "host/y.ts -> ../guest/compartment.ts",
    "keyless/z.ts -> ../host/a.ts",
    "guest/w.ts -> ../deno/signer.ts",
    "deno/v.ts -> ../../test/_assert.ts (outside src/)",
  ]);
});
