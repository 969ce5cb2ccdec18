import { assert, assertEquals } from "../../test/_assert.ts";
import { createApp } from "./app.ts";
import { TokenStore } from "./auth.ts";
import { openApiDocument } from "./openapi.ts";
import { SIGNING_ALGORITHM_NAMES } from "../core/algorithms.ts";
import { ERROR_CODES } from "../core/errors.ts";
import { VERSION } from "../core/version.ts";
import type { SealedKeys } from "../core/sealed_keys.ts";
import type { SignerClient } from "../core/signer_client.ts";

type Operation = {
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
  assertEquals(doc.paths["/v1/keys/{id}/sign"].post.security, undefined);
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
