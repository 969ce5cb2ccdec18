/**
 * The internet-facing Hono app. It holds no key bytes: every key operation goes through a
 * {@linkcode SignerClient}, and only public keys and signatures come back.
 *
 * @module
 */

import { hash } from "node:crypto";
import { Hono } from "hono";
import type { z } from "zod";
import type { Context } from "hono";
import { routePath } from "hono/route";
import type { AuditLog, AuditRecord } from "./audit.ts";
import { ALGORITHMS } from "../core/algorithms.ts";
import { admit, type Grant, mayUse, type TokenStore } from "./auth.ts";
import { KeycellError } from "../core/errors.ts";
import { Metrics } from "./metrics.ts";
import { decodeBase64, GenerateBody, ImportBody, SignBody } from "./schemas.ts";
import type { KeyInfo, SignerClient } from "../core/signer_client.ts";
import { type SealedKeys, WRAPPED_KEY_OAEP_BYTES } from "../core/sealed_keys.ts";
import { KEY_ID_PATTERN } from "../core/protocol.ts";

/** What the app needs. */
export interface AppOptions {
  signer: SignerClient;
  /**
   * The sealed key store behind the signer (usually the same object): adds paged listing, the
   * wrapping key and wrapped import. Without it, keys are listed from the guest.
   */
  keys?: SealedKeys;
  tokens: TokenStore;
  /** Largest request body accepted; larger ones answer 413. Default 64 KiB. */
  maxBodyBytes?: number;
  /** Signer calls allowed in flight at once; more answer 429. Default 256. */
  maxInFlight?: number;
  metrics?: Metrics;
  /** Records every request but `/healthz`. */
  audit?: AuditLog;
  /**
   * Adds `POST /v1/faults/trap`, which makes the guest trap, for the isolation and recovery
   * tests. Off unless KEYCELL_FAULT_INJECTION=1.
   */
  faultInjection?: boolean;
}

/** What a request's handlers add to its audit record. */
type AuditFields = Pick<AuditRecord, "error" | "keyId" | "keySpec" | "algorithm" | "messageSha256">;

/** A client's `X-Request-Id` is kept when it looks like an id; otherwise, with an audit log, the server makes one. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

type Env = {
  /** Deno.serve's connection info, when the app is served (absent under `app.request`). */
  Bindings: { remoteAddr?: Deno.Addr };
  Variables: { grant?: Grant; audit: AuditFields };
};


/**
 * Builds the keycell HTTP API.
 *
 * @example
 * ```ts
 * const app = createApp({ signer, tokens });
 * Deno.serve({ port: 8787 }, app.fetch);
 * ```
 */
export function createApp(options: AppOptions): Hono<Env> {
  const { signer, tokens } = options;
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
  const maxInFlight = options.maxInFlight ?? 256;
  const metrics = options.metrics ?? new Metrics();
  const audit = options.audit;
  let inFlight = 0;

  /** Runs one signer call within the in-flight bound. */
  async function withSigner<T>(operation: string, work: () => Promise<T>): Promise<T> {
    if (inFlight >= maxInFlight) throw new KeycellError("overloaded", "too many signing requests in flight; retry later");
    inFlight++;
    try {
      return await metrics.time(operation, work);
    } finally {
      inFlight--;
    }
  }

  const app = new Hono<Env>();

  app.use("*", async (c, next) => {
    const start = performance.now();
    const fields: AuditFields = {};
    c.set("audit", fields);
    const supplied = c.req.header("X-Request-Id");
    // Made only for the audit log to name: the header costs about 3 µs per answer.
    const requestId = supplied !== undefined && REQUEST_ID.test(supplied) ? supplied : audit && crypto.randomUUID();
    // Set before the answer is made, so every answer (errors and 404s included) is built with it.
    if (requestId !== undefined) c.header("X-Request-Id", requestId);
    await next();
    // The route the request matched, even when a middleware (authentication) answered it.
    const route = routePath(c, -1);
    const status = String(c.res.status);
    metrics.count("keycell_http_requests_total", { route, status });
    const token = c.get("grant")?.name;
    if (token !== undefined) metrics.count("keycell_token_requests_total", { token, status });
    if (audit === undefined || requestId === undefined || route === "/healthz") return;
    const remote = c.env?.remoteAddr;
    audit.record({
      time: new Date().toISOString(),
      requestId,
      remote: remote?.transport === "tcp" ? remote.hostname : undefined,
      token,
      method: c.req.method,
      route,
      status: c.res.status,
      ...fields,
      ms: Math.round((performance.now() - start) * 1000) / 1000,
    });
  });

  app.onError((err, c) => {
    if (err instanceof KeycellError) return errorResponse(c, err);
    console.error("keycell: unexpected error:", err);
    return errorResponse(c, new KeycellError("internal", "internal error"));
  });
  app.notFound((c) => errorResponse(c, new KeycellError("not_found", "no such route")));

  app.get("/healthz", async (c) => {
    await withSigner("health", () => signer.health());
    return c.json({ status: "ok", signer: signer.mode });
  });

  const authenticated = async (c: Context<Env>, next: () => Promise<void>) => {
    const grant = tokens.authenticate(c.req.header("Authorization"));
    c.set("grant", grant);
    admit(grant);
    await next();
  };
  app.use("/v1/*", authenticated);
  app.use("/metrics", authenticated);

  app.get("/metrics", (c) => {
    requireAdmin(c, "metrics");
    return c.text(metrics.render(), 200, { "Content-Type": "text/plain; version=0.0.4" });
  });

  app.get("/v1/keys", async (c) => {
    const grant = grantOf(c);
    const sealed = options.keys;
    if (sealed === undefined) {
      const keys = await withSigner("list", () => signer.listKeys());
      return c.json({ keys: keys.filter((k) => mayUse(grant, k.id)).map(keyJson) });
    }
    const { limit, cursor } = pageQuery(c);
    const page = await withSigner("list", () => sealed.listPage({ limit, cursor }));
    return c.json({
      keys: page.keys.filter((k) => mayUse(grant, k.id)).map(keyJson),
      ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}),
    });
  });

  if (options.keys !== undefined) {
    const sealed = options.keys;
    app.get("/v1/wrapping-key", async (c) => {
      requireAdmin(c, "importing keys");
      const wrapping = await withSigner("wrapping_key", () => sealed.wrappingKey());
      return c.json({ publicKey: wrapping.spki.toBase64() });
    });

    app.post("/v1/keys/import", async (c) => {
      requireAdmin(c, "importing keys");
      const { keySpec, wrappedKey } = await parseBody(c, ImportBody, maxBodyBytes);
      const wrapped = decodeBase64(wrappedKey);
      if (wrapped === undefined) throw new KeycellError("bad_request", "wrappedKey must be standard padded base64");
      if (wrapped.length <= WRAPPED_KEY_OAEP_BYTES + 8) {
        throw new KeycellError("bad_request", `wrappedKey must be the ${WRAPPED_KEY_OAEP_BYTES}-byte RSA-OAEP ciphertext followed by the key wrap`);
      }
      c.get("audit").keySpec = keySpec;
      return c.json(keyJson(made(c, await withSigner("import", () => sealed.importWrapped(keySpec, wrapped)))), 201);
    });
  }

  app.get("/v1/keys/:id", async (c) => {
    const id = permittedKeyId(c);
    return c.json(keyJson(await withSigner("get", () => signer.getKey(id))));
  });

  app.post("/v1/keys", async (c) => {
    requireAdmin(c, "generating keys");
    const { keySpec } = await parseBody(c, GenerateBody, maxBodyBytes);
    c.get("audit").keySpec = keySpec;
    return c.json(keyJson(made(c, await withSigner("generate", () => signer.generate(keySpec)))), 201);
  });

  app.delete("/v1/keys/:id", async (c) => {
    requireAdmin(c, "deleting keys");
    const id = permittedKeyId(c);
    await withSigner("delete", () => signer.deleteKey(id));
    return c.body(null, 204);
  });

  if (options.faultInjection) {
    app.post("/v1/faults/trap", async (c) => {
      requireAdmin(c, "fault injection");
      throw await signer.injectTrap();
    });
  }

  app.post("/v1/keys/:id/sign", async (c) => {
    const keyId = permittedKeyId(c);
    const body = await parseBody(c, SignBody, maxBodyBytes);
    c.get("audit").algorithm = body.algorithm;
    const algorithm = ALGORITHMS[body.algorithm];
    const message = decodeBase64(body.message);
    if (message === undefined) throw new KeycellError("bad_request", "message must be standard padded base64");
    if (audit !== undefined) c.get("audit").messageSha256 = hash("sha256", message, "hex");
    if (body.messageType === "DIGEST" && message.length !== algorithm.digestBytes) {
      throw new KeycellError(
        "bad_request",
        `a DIGEST for ${body.algorithm} must be ${algorithm.digestBytes} bytes, not ${message.length}`,
      );
    }
    if (body.signatureFormat !== undefined && algorithm.family !== "EC") {
      throw new KeycellError("bad_request", "signatureFormat applies to ECDSA algorithms only");
    }
    const signature = await withSigner("sign", () =>
      signer.sign({
        keyId,
        algorithm: body.algorithm,
        messageType: body.messageType,
        message,
        signatureFormat: body.signatureFormat,
      }));
    metrics.count("keycell_signatures_total", { algorithm: body.algorithm });
    return c.json({ keyId, algorithm: body.algorithm, signature: signature.toBase64() });
  });

  return app;
}

/** The key id from the path, once it is well formed and the token may use it. */
function permittedKeyId(c: Context<Env>): string {
  const id = c.req.param("id") ?? "";
  // Not hex, or too long: no key can have that id, and saying so is all the caller learns.
  if (!KEY_ID_PATTERN.test(id)) throw new KeycellError("key_not_found", "no key with that id");
  c.get("audit").keyId = id;
  if (!mayUse(grantOf(c), id)) throw new KeycellError("forbidden", "this token may not use that key");
  return id;
}

/** Largest page `GET /v1/keys` answers. */
const MAX_PAGE = 1000;

function pageQuery(c: Context<Env>): { limit: number; cursor?: string } {
  const limitText = c.req.query("limit");
  const limit = limitText === undefined ? 100 : Number(limitText);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    throw new KeycellError("bad_request", `limit must be an integer from 1 to ${MAX_PAGE}`);
  }
  const cursor = c.req.query("cursor");
  if (cursor !== undefined && !KEY_ID_PATTERN.test(cursor)) throw new KeycellError("bad_request", "cursor must be a nextCursor from a previous page");
  return { limit, cursor };
}

/** The grant of an authenticated request (every route that asks is behind `authenticated`). */
function grantOf(c: Context<Env>): Grant {
  return c.get("grant")!;
}

/** Notes a key a request made in its audit record. */
function made(c: Context<Env>, key: KeyInfo): KeyInfo {
  c.get("audit").keyId = key.id;
  return key;
}

function requireAdmin(c: Context<Env>, what: string): void {
  if (grantOf(c).keys !== "*") throw new KeycellError("forbidden", `${what} needs a token scoped to every key`);
}

async function parseBody<T>(c: Context<Env>, schema: z.ZodType<T>, maxBytes: number): Promise<T> {
  const text = await readBody(c, maxBytes);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KeycellError("bad_request", "the body must be JSON");
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
    throw new KeycellError("bad_request", `${where}${issue.message}`);
  }
  return parsed.data;
}

/**
 * The body as text, refused with 413 past `maxBytes`. Only routes that read a body pay for the
 * check: a declared Content-Length is trusted (HTTP framing stops the body there), and a chunked
 * body is counted as it arrives, so an oversized one is never held whole.
 */
async function readBody(c: Context<Env>, maxBytes: number): Promise<string> {
  const tooLarge = () => new KeycellError("too_large", `request body is over ${maxBytes} bytes`);
  const declared = c.req.header("Content-Length");
  if (declared !== undefined) {
    if (!/^\d{1,15}$/.test(declared)) throw new KeycellError("bad_request", "Content-Length must be a number");
    if (Number(declared) > maxBytes) throw tooLarge();
    return await c.req.text();
  }
  const body = c.req.raw.body;
  if (body === null) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > maxBytes) throw tooLarge();
    chunks.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(all);
}

function keyJson(key: KeyInfo): { id: string; keySpec: string; publicKey: string } {
  return { id: key.id, keySpec: key.keySpec, publicKey: key.publicKey.toBase64() };
}

function errorResponse(c: Context<Env>, err: KeycellError): Response {
  c.get("audit").error = err.code;
  const headers: Record<string, string> = {};
  if (err.code === "unauthorized") headers["WWW-Authenticate"] = "Bearer";
  if (err.retryAfterSeconds !== undefined) headers["Retry-After"] = String(Math.ceil(err.retryAfterSeconds));
  return c.json(err.toJSON(), err.status, headers);
}
