/**
 * The API reference page's script. It runs in the browser, not in keycell: `GET
 * /docs/reference.js` serves this function's source and calls it. It fetches `/openapi.json` and
 * builds the page with DOM calls only (text goes in as text nodes, never as HTML), so the strict
 * Content-Security-Policy of `/docs` holds: no inline script or style, no eval, nothing but the
 * page's own origin.
 *
 * @module
 */

/** Renders the API description into `#reference`; sets `data-state` on `<body>` to `ready` or `failed`. */
export function renderReference() {
  const root = document.getElementById("reference");

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes ?? {})) element.setAttribute(name, String(value));
    element.append(...children.filter((child) => child !== undefined));
    return element;
  }

  function schemaName(ref) {
    return ref.slice(ref.lastIndexOf("/") + 1);
  }

  /** A schema as indented JSON; a whole-schema `$ref` links to the named schema below. */
  function schemaBlock(schema) {
    if (schema === undefined) return el("span", { class: "none" }, "(any)");
    if (typeof schema.$ref === "string" && Object.keys(schema).length === 1) {
      return el("a", { href: `#schema-${schemaName(schema.$ref)}` }, schemaName(schema.$ref));
    }
    return el("pre", { class: "schema" }, JSON.stringify(schema, null, 2));
  }

  function table(headings, rows) {
    return el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((cell) => el("td", {}, cell))))),
    );
  }

  function operation(path, method, op, doc) {
    const security = op.security ?? doc.security ?? [];
    const schemes = security.flatMap((requirement) => Object.keys(requirement));
    const parameters = op.parameters ?? [];
    const body = op.requestBody?.content ?? {};
    return el(
      "section",
      { class: "operation", id: `op-${op.operationId}`, "data-method": method.toUpperCase(), "data-path": path },
      el("h2", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), " ", el("code", { class: "path" }, path)),
      el("p", { class: "summary" }, op.summary ?? ""),
      el(
        "p",
        { class: "auth" },
        schemes.length === 0 ? "Auth: none." : `Auth: ${schemes.map((s) => doc.components?.securitySchemes?.[s]?.scheme ?? s).join(" or ")} token.`,
      ),
      parameters.length === 0 ? undefined : el("h3", {}, "Parameters"),
      parameters.length === 0 ? undefined : table(
        ["name", "in", "required", "schema"],
        parameters.map((p) => [el("code", {}, p.name), p.in, p.required ? "yes" : "no", schemaBlock(p.schema)]),
      ),
      ...Object.entries(body).flatMap(([type, media]) => [el("h3", {}, `Request body (${type})`), schemaBlock(media.schema)]),
      el("h3", {}, "Responses"),
      table(
        ["status", "description", "body"],
        Object.entries(op.responses ?? {}).map(([status, response]) => [
          el("code", {}, status),
          response.description ?? "",
          el(
            "div",
            {},
            ...Object.entries(response.content ?? {}).flatMap(([type, media]) => [el("div", { class: "type" }, type), schemaBlock(media.schema)]),
          ),
        ]),
      ),
    );
  }

  function render(doc) {
    const operations = Object.entries(doc.paths ?? {}).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => ({ path, method, op }))
    );
    const schemas = Object.entries(doc.components?.schemas ?? {});
    root.replaceChildren(
      el("h1", {}, `${doc.info?.title ?? "API"} ${doc.info?.version ?? ""}`.trim()),
      el("p", {}, doc.info?.description ?? "", " The machine-readable description: ", el("a", { href: "openapi.json" }, "openapi.json"), "."),
      el(
        "nav",
        {},
        el(
          "ul",
          {},
          ...operations.map(({ path, method, op }) =>
            el("li", {}, el("a", { href: `#op-${op.operationId}` }, el("span", { class: `method ${method}` }, method.toUpperCase()), " ", path))
          ),
        ),
      ),
      ...operations.map(({ path, method, op }) => operation(path, method, op, doc)),
      schemas.length === 0 ? "" : el("h2", {}, "Schemas"),
      ...schemas.map(([name, schema]) => el("section", { class: "schema", id: `schema-${name}` }, el("h3", {}, name), schemaBlock(schema))),
    );
    document.title = `${doc.info?.title ?? "API"} API reference`;
    document.body.dataset.state = "ready";
  }

  fetch("openapi.json")
    .then((res) => {
      if (!res.ok) throw new Error(`openapi.json answered ${res.status}`);
      return res.json();
    })
    .then(render)
    .catch((err) => {
      root.replaceChildren(el("p", { class: "failed" }, `The API description could not be loaded: ${err.message}`));
      document.body.dataset.state = "failed";
    });
}
