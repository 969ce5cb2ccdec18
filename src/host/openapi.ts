/**
 * The API's OpenAPI 3.1 description, made from the routes the app really has and the zod schemas
 * that validate their bodies and queries, so it cannot drift from what the server accepts.
 * `GET /openapi.json` serves it without a token.
 *
 * @module
 */

import { z } from "zod";
import { ERROR_CODES } from "../core/errors.ts";
import { VERSION } from "../core/version.ts";
import {
  DeleteQuery,
  GenerateBody,
  ImportBody,
  JwsBody,
  JwtBody,
  KeyQuery,
  PageQuery,
  ScheduleDeletionBody,
  SignBatchBody,
  SignBody,
  VerifyBody,
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

/** Routes anyone may call: probes, the public key set and this description. */
const PUBLIC = new Set(["/livez", "/readyz", "/healthz", "/.well-known/jwks.json", "/openapi.json"]);

/** The status a route answers when it works. */
function successStatus(method: string, path: string): string {
  if (method === "DELETE" && path === "/v1/keys/:id") return "204";
  if (method === "POST" && (path === "/v1/keys" || path === "/v1/keys/import")) return "201";
  return "200";
}

const ErrorBody = z.object({
  error: z.object({
    code: z.enum(Object.keys(ERROR_CODES) as [keyof typeof ERROR_CODES, ...(keyof typeof ERROR_CODES)[]]),
    message: z.string(),
  }),
});

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
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
  const errorResponse = { description: "keycell's error shape", content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } };
  for (const { method, path } of routes) {
    if (method === "ALL") continue;
    const key = `${method} ${path}`;
    const input = INPUTS[key] ?? {};
    const openPath = path.replace(/:([A-Za-z_]+)/g, "{$1}");
    const parameters: Record<string, unknown>[] = [];
    for (const name of path.match(/:([A-Za-z_]+)/g) ?? []) {
      parameters.push({ name: name.slice(1), in: "path", required: true, schema: { type: "string", pattern: KEY_REF_PATTERN } });
    }
    for (const [name, field] of Object.entries(input.query?.shape ?? {})) {
      parameters.push({ name, in: "query", required: !(field as z.ZodType).safeParse(undefined).success, schema: jsonSchema(field as z.ZodType) });
    }
    const status = successStatus(method, path);
    (paths[openPath] ??= {})[method.toLowerCase()] = {
      operationId: `${method.toLowerCase()}${openPath.replace(/[^A-Za-z0-9]+(.)?/g, (_, c: string | undefined) => (c ?? "").toUpperCase())}`,
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(input.body ? { requestBody: { required: true, content: { "application/json": { schema: jsonSchema(input.body) } } } } : {}),
      ...(PUBLIC.has(path) ? { security: [] } : {}),
      responses: {
        [status]: status === "204" ? { description: "done" } : { description: "done", content: { [path === "/metrics" ? "text/plain" : "application/json"]: {} } },
        default: errorResponse,
      },
    };
  }
  return {
    openapi: "3.1.0",
    info: { title: "keycell", version: VERSION, description: "A signing service whose private keys live only inside a WebAssembly sandbox." },
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: { Error: jsonSchema(ErrorBody) },
    },
    paths,
  };
}
