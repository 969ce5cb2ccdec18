/**
 * `GET /docs`: the API reference, a page of keycell's own that the browser renders from
 * `/openapi.json`; nothing is fetched from anywhere else, so it works offline. The page is plain
 * HTML with its script and style sheet beside it (`/docs/reference.js`, `/docs/reference.css`),
 * served under a Content-Security-Policy that allows only those and the description.
 *
 * @module
 */

import { Hono } from "hono";
import type { Env } from "../_env.ts";
import { renderReference } from "./_reference_page.js";

/**
 * What the page may load: its own script, style sheet and `/openapi.json`, nothing inline, nothing
 * from elsewhere, and it may not be framed.
 */
export const DOCS_CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HEADERS = {
  "Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY,
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

// Relative links: the page works wherever keycell is mounted, as long as /docs and /openapi.json
// stay siblings.
const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keycell API reference</title>
<link rel="stylesheet" href="docs/reference.css">
<script src="docs/reference.js" defer></script>
</head>
<body data-state="loading">
<main id="reference"><p>Loading the API description from <a href="openapi.json">openapi.json</a>…</p></main>
</body>
</html>
`;

const SCRIPT = `"use strict";\n(${renderReference.toString()})();\n`;

const STYLE = `body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem; color: #222; }
code, pre { font: 13px/1.35 ui-monospace, monospace; }
pre.schema { background: #f5f5f5; padding: .5rem; overflow-x: auto; margin: .25rem 0; }
nav ul { columns: 2; padding-left: 1rem; }
section.operation { border-top: 1px solid #ccc; padding-top: .5rem; margin-top: 1.5rem; }
.method { display: inline-block; min-width: 4rem; font-weight: bold; font-family: ui-monospace, monospace; }
.get { color: #1a6; } .post { color: #15a; } .put { color: #a60; } .delete { color: #b22; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
.type { color: #666; font-size: 13px; }
.failed { color: #b22; }
`;

/**
 * The reference page's routes, to mount at `/docs` outside `authenticate`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * const app = new Hono<Env>();
 * app.route("/docs", docsRoutes());
 * ```
 */
export function docsRoutes(): Hono<Env> {
  return new Hono<Env>()
    .get("/", (c) => c.html(PAGE, 200, HEADERS))
    .get("/reference.js", (c) => c.body(SCRIPT, 200, { ...HEADERS, "Content-Type": "text/javascript; charset=utf-8" }))
    .get("/reference.css", (c) => c.body(STYLE, 200, { ...HEADERS, "Content-Type": "text/css; charset=utf-8" }));
}
