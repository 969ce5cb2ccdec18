/**
 * zod validation of request bodies and queries, answering keycell's 400 `bad_request` with the
 * first problem found.
 *
 * Not `hono/validator`: its JSON target reads a body only when the client labels it
 * `application/json`, and keycell has always read the body whatever its label.
 *
 * @module
 */

import type { MiddlewareHandler } from "hono";
import type { z } from "zod";
import type { Env } from "../_env.ts";
import { KeycellError } from "../errors.ts";
import { readBody } from "./body_limit.ts";

/**
 * Reads the body (at most `maxBytes`, see {@linkcode readBody}) as JSON matching `schema`; the
 * handler reads it as `c.req.valid("json")`. Put {@linkcode bodyLimit} before it.
 *
 * @example
 * ```ts
 * keys.post("/", bodyLimit(max), jsonBody(GenerateBody, max), (c) => c.json(c.req.valid("json")));
 * ```
 */
export function jsonBody<S extends z.ZodType>(
  schema: S,
  maxBytes: number,
): MiddlewareHandler<Env, string, { in: { json: z.input<S> }; out: { json: z.output<S> } }> {
  return async function jsonBody(c, next) {
    const text = new TextDecoder().decode(await readBody(c.req.raw, maxBytes));
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new KeycellError("bad_request", "the body must be JSON");
    }
    c.req.addValidatedData("json", parse(schema, json) as object);
    await next();
  };
}

/**
 * Checks the query string against `schema`; the handler reads it as `c.req.valid("query")`.
 *
 * @example
 * ```ts
 * keys.get("/", query(PageQuery), (c) => c.json(c.req.valid("query")));
 * ```
 */
export function query<S extends z.ZodType>(
  schema: S,
): MiddlewareHandler<Env, string, { in: { query: z.input<S> }; out: { query: z.output<S> } }> {
  return async function query(c, next) {
    c.req.addValidatedData("query", parse(schema, c.req.query()) as object);
    await next();
  };
}

function parse<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
  throw new KeycellError("bad_request", `${where}${issue.message}`);
}
