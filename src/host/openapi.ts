/**
 * The API's OpenAPI 3.1 description, made from the routes the app really has, the zod schemas
 * that validate their bodies and queries and those of their answers, and the one error table, so
 * it cannot drift from what the server accepts. `GET /openapi.json` serves it without a token, and
 * `GET /docs` renders it for people.
 *
 * @module
 */

import { z } from "zod";
import { ERROR_CODES, type ErrorCode } from "../core/errors.ts";
import { VERSION } from "../core/version.ts";
import {
  DeleteQuery,
  ErrorAnswer,
  GenerateBody,
  GeneratedKeyAnswer,
  ImportBody,
  JwkSetAnswer,
  JwsAnswer,
  JwsBody,
  JwtAnswer,
  JwtBody,
  KeyAnswer,
  KeyPageAnswer,
  KeyQuery,
  LiveAnswer,
  PageQuery,
  KeyDetailsAnswer,
  KeyPemAnswer,
  PublicJwkAnswer,
  ReadyAnswer,
  ScheduleDeletionBody,
  SignAnswer,
  SignBatchAnswer,
  SignBatchBody,
  SignBody,
  VerifyAnswer,
  VerifyBody,
  WrappingKeyAnswer,
} from "./schemas.ts";

/** A route as Hono lists it (`app.routes`). */
export interface RouteEntry {
  method: string;
  path: string;
}

/** What each route takes, by `METHOD path`; a route not named here takes no body or query. */
const INPUTS: Record<string, { body?: z.ZodType; query?: z.ZodObject }> = {
  "GET /v1/keys": { query: PageQuery },
  "POST /v1/keys": { body: GenerateBody },
  "GET /v1/keys/:id": { query: KeyQuery },
  "POST /v1/keys/:id/sign": { body: SignBody },
  "POST /v1/keys/:id/sign-batch": { body: SignBatchBody },
  "POST /v1/keys/:id/verify": { body: VerifyBody },
  "POST /v1/keys/:id/jws": { body: JwsBody },
  "POST /v1/keys/:id/jwt": { body: JwtBody },
  "POST /v1/keys/import": { body: ImportBody },
  "DELETE /v1/keys/:id": { query: DeleteQuery },
  "POST /v1/keys/:id/schedule-deletion": { body: ScheduleDeletionBody },
};

/** A path's `{id}`: a key id, or a key's name (`KEY_NAME_PATTERN`). */
const KEY_REF_PATTERN = "^(?:[0-9a-f]{64}|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$";

/** A success status keycell answers with. */
export type SuccessStatus = 200 | 201 | 204;

/**
 * What a route does, in a line, and what it answers when it works: its status (200 unless said)
 * and its body, a zod schema for JSON or the media type of anything else (none for 204). A route
 * that only ever fails (the fault injection) has the status `"fails"`.
 */
export interface Outcome {
  summary: string;
  status?: SuccessStatus | "fails";
  body?: z.ZodType | "text/plain" | "text/html" | "text/javascript" | "text/css";
}

/** Every route's {@linkcode Outcome}, by `METHOD path`; openapi_test.ts checks none is missing. */
export const OUTCOMES: Record<string, Outcome> = {
  "GET /livez": { summary: "Liveness: the process answers HTTP (asks nothing of the signer).", body: LiveAnswer },
  "GET /readyz": { summary: "Readiness: the guest and the key store answer within a second.", body: ReadyAnswer },
  "GET /healthz": { summary: "Readiness, by its older name.", body: ReadyAnswer },
  "GET /.well-known/jwks.json": { summary: "The published JWK Set, for verifiers.", body: JwkSetAnswer },
  "GET /metrics": { summary: "Metrics in the Prometheus text format (full-scope token).", body: "text/plain" },
  "GET /v1/keys": { summary: "Lists the keys the token may use, a page at a time.", body: KeyPageAnswer },
  "GET /v1/keys/:id": {
    summary: "A key: its public half, its name's versions, state and metadata; with format=jwk the public half as a JWK, with format=pem as PEM.",
    body: z.union([KeyDetailsAnswer, KeyAnswer, PublicJwkAnswer, KeyPemAnswer]),
  },
  "POST /v1/keys": { summary: "Generates a key in the guest (full-scope token).", status: 201, body: GeneratedKeyAnswer },
  "DELETE /v1/keys/:id": {
    summary: "Deletes a key and every version of its name at once, with immediately=true only; else see schedule-deletion (full-scope token).",
    status: 204,
  },
  "POST /v1/keys/:id/rotate": { summary: "Makes a new version of the key in the guest and makes it primary (full-scope token).", body: KeyDetailsAnswer },
  "POST /v1/keys/:id/disable": { summary: "Stops every version of the key from signing until enabled (full-scope token).", body: KeyDetailsAnswer },
  "POST /v1/keys/:id/enable": { summary: "Lets a disabled key sign again (full-scope token).", body: KeyDetailsAnswer },
  "POST /v1/keys/:id/schedule-deletion": {
    summary: "Deletes the key after a waiting period of 7 to 30 days; it cannot sign meanwhile (full-scope token).",
    body: KeyDetailsAnswer,
  },
  "POST /v1/keys/:id/cancel-deletion": { summary: "Cancels a scheduled deletion; the key stays disabled (full-scope token).", body: KeyDetailsAnswer },
  "POST /v1/keys/:id/sign": { summary: "Signs a message or a digest with the key.", body: SignAnswer },
  "POST /v1/keys/:id/sign-batch": { summary: "Signs up to 100 messages with the key, each answered on its own.", body: SignBatchAnswer },
  "POST /v1/keys/:id/verify": { summary: "Checks a signature with the key's public half.", body: VerifyAnswer },
  "POST /v1/keys/:id/jws": { summary: "Signs a compact JWS (RFC 7515) with the key.", body: JwsAnswer },
  "POST /v1/keys/:id/jwt": { summary: "Signs a JWT (RFC 7519) with the key.", body: JwtAnswer },
  "GET /v1/wrapping-key": { summary: "The RSA public key (SPKI) to wrap keys to for import (full-scope token).", body: WrappingKeyAnswer },
  "POST /v1/keys/import": { summary: "Imports a key wrapped to the wrapping key (full-scope token).", status: 201, body: KeyAnswer },
  "PUT /v1/keys/:id/jwks": { summary: "Publishes the key in the JWK Set (full-scope token).", status: 204 },
  "DELETE /v1/keys/:id/jwks": { summary: "Takes the key out of the JWK Set (full-scope token).", status: 204 },
  "POST /v1/faults/trap": { summary: "Makes the guest trap, for recovery tests (only with KEYCELL_FAULT_INJECTION=1).", status: "fails" },
  "GET /openapi.json": { summary: "This description of the API, OpenAPI 3.1.", body: z.record(z.string(), z.unknown()) },
  "GET /docs": { summary: "The API reference page, rendered in the browser from /openapi.json.", body: "text/html" },
  "GET /docs/reference.js": { summary: "The reference page's script.", body: "text/javascript" },
  "GET /docs/reference.css": { summary: "The reference page's style sheet.", body: "text/css" },
};

/** Routes anyone may call: probes, the public key set, this description and its page. */
const PUBLIC = new Set(["/livez", "/readyz", "/healthz", "/.well-known/jwks.json", "/openapi.json", "/docs", "/docs/reference.js", "/docs/reference.css"]);

/** Routes that answer without the signer or the key store, so never `signer_unavailable`. */
const SELF_CONTAINED = new Set(["/livez", "/metrics", "/openapi.json", "/docs", "/docs/reference.js", "/docs/reference.css"]);

/**
 * The error codes a route can answer with, from what it is: behind a token or not, taking a body
 * or a query, naming a key, asking the signer. Any route can fail unexpectedly (`internal`).
 */
function errorCodesOf(path: string, input: { body?: unknown; query?: unknown }): ErrorCode[] {
  const codes: ErrorCode[] = [];
  if (!PUBLIC.has(path)) codes.push("unauthorized", "forbidden", "rate_limited", "overloaded", "busy");
  // A key reference in the path is checked too.
  if (input.body !== undefined || input.query !== undefined || path.includes("/:id")) codes.push("bad_request");
  if (input.body !== undefined) codes.push("too_large", "request_timeout");
  // A disabled key, or one waiting for its deletion, refuses to sign and most changes.
  if (path.includes("/:id")) codes.push("key_not_found", "key_disabled", "key_pending_deletion");
  // Keys are made under a name of the caller's choosing, which may be taken.
  if (path === "/v1/keys" || path === "/v1/keys/import") codes.push("key_name_taken");
  codes.push("internal");
  if (!SELF_CONTAINED.has(path)) codes.push("key_unusable", "signer_unavailable");
  return codes;
}

/** The error answers for `codes`, one per HTTP status, each naming its codes. */
function errorResponses(codes: readonly ErrorCode[]): Record<string, unknown> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of codes) byStatus.set(ERROR_CODES[code].http, [...byStatus.get(ERROR_CODES[code].http) ?? [], code]);
  return Object.fromEntries(
    [...byStatus].sort(([a], [b]) => a - b).map(([status, named]) => [
      String(status),
      { description: named.join(", "), content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } },
    ]),
  );
}

/** The success answer of `outcome`. */
function successResponses(outcome: Outcome | undefined): Record<string, unknown> {
  const status = outcome?.status ?? 200;
  if (status === "fails") return {};
  if (status === 204) return { "204": { description: "done, no body" } };
  const body = outcome?.body;
  const content = body === undefined
    ? { "application/json": {} }
    : typeof body === "string"
    ? { [body]: { schema: { type: "string" } } }
    : { "application/json": { schema: jsonSchema(body, "output") } };
  return { [String(status)]: { description: "done", content } };
}

function jsonSchema(schema: z.ZodType, io: "input" | "output" = "input"): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: "any" }) as Record<string, unknown>;
  return rest;
}

/**
 * The OpenAPI 3.1 document for `routes` (middleware, listed under `ALL`, is left out).
 *
 * @example
 * ```ts
 * import { openApiDocument } from "./openapi.ts";
 *
 * const doc = openApiDocument([{ method: "POST", path: "/v1/keys/:id/sign" }]);
 * Object.keys(doc.paths); // ["/v1/keys/{id}/sign"]
 * ```
 */
export function openApiDocument(routes: readonly RouteEntry[]): { openapi: string; paths: Record<string, Record<string, unknown>> } & Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const { method, path } of routes) {
    if (method === "ALL") continue;
    const key = `${method} ${path}`;
    const input = INPUTS[key] ?? {};
    const outcome = OUTCOMES[key];
    const openPath = path.replace(/:([A-Za-z_]+)/g, "{$1}");
    const parameters: Record<string, unknown>[] = [];
    for (const name of path.match(/:([A-Za-z_]+)/g) ?? []) {
      parameters.push({ name: name.slice(1), in: "path", required: true, schema: { type: "string", pattern: KEY_REF_PATTERN } });
    }
    for (const [name, field] of Object.entries(input.query?.shape ?? {})) {
      parameters.push({ name, in: "query", required: !(field as z.ZodType).safeParse(undefined).success, schema: jsonSchema(field as z.ZodType) });
    }
    (paths[openPath] ??= {})[method.toLowerCase()] = {
      operationId: `${method.toLowerCase()}${openPath.replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? "").toUpperCase())}`,
      summary: outcome?.summary ?? key,
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(input.body ? { requestBody: { required: true, content: { "application/json": { schema: jsonSchema(input.body) } } } } : {}),
      ...(PUBLIC.has(path) ? { security: [] } : {}),
      responses: { ...successResponses(outcome), ...errorResponses(errorCodesOf(path, input)) },
    };
  }
  return {
    openapi: "3.1.0",
    info: { title: "keycell", version: VERSION, description: "A signing service whose private keys live only inside a WebAssembly sandbox." },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: { Error: jsonSchema(ErrorAnswer, "output") },
    },
    paths,
  };
}
