import { assert, assertEquals } from "../../test/_assert.ts";
import { createApp } from "./app.ts";
import { TokenStore } from "./auth.ts";
import { openApiDocument, OUTCOMES } from "./openapi.ts";
import { SIGNING_ALGORITHM_NAMES } from "../core/algorithms.ts";
import { ERROR_CODES } from "../core/errors.ts";
import { VERSION } from "../core/version.ts";
import type { SealedKeys } from "../core/sealed_keys.ts";
import type { SignerClient } from "../core/signer_client.ts";

type Operation = {
  summary: string;
  responses: Record<string, { content?: Record<string, { schema?: Record<string, unknown> }> }>;
  requestBody?: { content: { "application/json": { schema: { properties: Record<string, { enum?: string[] }> } } } };
  parameters?: { name: string; in: string }[];
  security?: unknown[];
};
type Document = { openapi: string; info: { version: string }; paths: Record<string, Record<string, Operation>>; components: { schemas: Record<string, unknown> } };

Deno.test("GET /openapi.json describes every route the app has, without a token, from the schemas that validate them", async () => {
  const signer = { mode: "stub" } as unknown as SignerClient;
  const app = createApp({ signer, keys: {} as unknown as SealedKeys, tokens: TokenStore.fromEntries([]), faultInjection: false });
  const res = await app.request("/openapi.json");
  assertEquals(res.status, 200);
  const doc: Document = await res.json();
  assertEquals([doc.openapi, doc.info.version], ["3.1.0", VERSION]);

  // Every route the router has (middleware under ALL aside) is in the description, with its method.
  const routes = new Set(app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path.replace(/:([A-Za-z_]+)/g, "{$1}")}`));
  const described = new Set(Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)));
  assertEquals([...described].sort(), [...routes].sort());
  assert(routes.has("POST /v1/keys/{id}/sign") && routes.has("GET /openapi.json"), [...routes].join("\n"));

  // Bodies and queries come from the zod schemas the routes validate with.
  const sign = doc.paths["/v1/keys/{id}/sign"].post;
  assertEquals(sign.requestBody!.content["application/json"].schema.properties.algorithm.enum, [...SIGNING_ALGORITHM_NAMES]);
  assert(doc.paths["/v1/keys"].post.requestBody !== undefined, "generation takes a body");
  assertEquals(doc.paths["/v1/keys"].get.parameters!.map((p) => `${p.in}:${p.name}`).sort(), ["query:cursor", "query:limit"]);
  assertEquals(doc.paths["/v1/keys/{id}"].delete.parameters!.map((p) => `${p.in}:${p.name}`), ["path:id", "query:immediately"]);
  const schedule = doc.paths["/v1/keys/{id}/schedule-deletion"].post.requestBody!.content["application/json"].schema;
  const days = schedule.properties.pendingWindowDays as { minimum?: number; maximum?: number };
  assertEquals([days.minimum, days.maximum], [7, 30]);
  assertEquals(Object.keys(doc.paths["/v1/keys"].post.requestBody!.content["application/json"].schema.properties).sort(), [
    "description",
    "jwks",
    "keySpec",
    "labels",
    "name",
  ]);
  for (const change of ["rotate", "disable", "enable", "cancel-deletion"]) assert(routes.has(`POST /v1/keys/{id}/${change}`), change);
  const error = doc.components.schemas.Error as { properties: { error: { properties: { code: { enum: string[] } } } } };
  assertEquals(error.properties.error.properties.code.enum, Object.keys(ERROR_CODES));

  // Public routes say so; the rest need the bearer token.
  assertEquals(doc.paths["/healthz"].get.security, []);
  assertEquals(doc.paths["/docs"].get.security, []);
  assertEquals(doc.paths["/v1/keys/{id}/sign"].post.security, undefined);

  // Every route says what it does and answers: its success with its schema, and the error
  // statuses it can give, each with the one error shape.
  const undescribed = app.routes.filter((r) => r.method !== "ALL" && OUTCOMES[`${r.method} ${r.path}`] === undefined);
  assertEquals(undescribed.map((r) => `${r.method} ${r.path}`), [], "add these routes to OUTCOMES in src/host/openapi.ts");
  const statuses = (path: string, method: string) => Object.keys(doc.paths[path][method].responses);
  assertEquals(statuses("/v1/keys/{id}/sign", "post"), ["200", "400", "401", "403", "404", "408", "409", "413", "429", "500", "503"]);
  assertEquals(statuses("/v1/keys", "post"), ["201", "400", "401", "403", "408", "409", "413", "429", "500", "503"]);
  assertEquals(statuses("/v1/keys/{id}", "delete"), ["204", "400", "401", "403", "404", "409", "429", "500", "503"]);
  assertEquals(Object.keys(doc.paths["/v1/keys/{id}/rotate"].post.responses["200"].content!["application/json"].schema!.properties as object), [
    "id",
    "keySpec",
    "publicKey",
    "name",
    "state",
    "primary",
    "versions",
    "created",
    "description",
    "labels",
    "deletionDate",
  ]);
  assertEquals(statuses("/livez", "get"), ["200", "500"]);
  const signAnswers = doc.paths["/v1/keys/{id}/sign"].post.responses;
  assertEquals(Object.keys(signAnswers["200"].content!["application/json"].schema!.properties as object), ["keyId", "algorithm", "signature"]);
  assertEquals(signAnswers["404"].content!["application/json"].schema, { $ref: "#/components/schemas/Error" });
  assertEquals(Object.keys(doc.paths["/metrics"].get.responses["200"].content!), ["text/plain"]);
  assertEquals(Object.keys(doc.paths["/docs"].get.responses["200"].content!), ["text/html"]);
  assertEquals(doc.paths["/v1/keys/{id}/sign"].post.summary, OUTCOMES["POST /v1/keys/:id/sign"].summary);
});

Deno.test("openApiDocument: middleware is left out and one route's handlers make one operation", () => {
  const doc = openApiDocument([
    { method: "ALL", path: "/v1/*" },
    { method: "POST", path: "/v1/keys/:id/sign" },
    { method: "POST", path: "/v1/keys/:id/sign" },
  ]);
  assertEquals(Object.keys(doc.paths), ["/v1/keys/{id}/sign"]);
  assertEquals(Object.keys(doc.paths["/v1/keys/{id}/sign"]), ["post"]);
});
