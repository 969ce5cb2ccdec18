/**
 * `/v1/keys`: listing, reading, generating and deleting keys, by id or by name.
 *
 * @module
 */

import { Hono, type MiddlewareHandler } from "hono";
import { type Env, grantOf, keyDetailsJson, keyJson } from "../_env.ts";
import { mayUse } from "../auth.ts";
import type { Metrics } from "../metrics.ts";
import { fullScope, permittedKey } from "../middleware/auth.ts";
import { type BodyLimits, jsonBody, query } from "../middleware/validate.ts";
import { KeycellError } from "../../core/errors.ts";
import { KEY_ID_PATTERN } from "../../core/protocol.ts";
import { publicKeyPem } from "../../core/key_names.ts";
import { DeleteQuery, GenerateBody, KeyQuery, PageQuery } from "../schemas.ts";
import { publicJwk } from "../jose.ts";
import type { JwksPublisher } from "../jwks.ts";
import type { KeyInfo, SignerClient } from "../../core/signer_client.ts";
import type { SealedKeys } from "../../core/sealed_keys.ts";

/** What the key routes work with. */
export interface KeyRoutesOptions extends BodyLimits {
  signer: SignerClient;
  /** The sealed key store, for paged listing; without it, keys are listed from the guest. */
  keys?: SealedKeys;
  metrics: Metrics;
  /** The app's one in-flight limit, put before every signer call. */
  inFlight: MiddlewareHandler<Env>;
  /** The published JWK Set, for keys generated into it; without it, `jwks: true` answers 400. */
  jwks?: JwksPublisher;
}

/**
 * The key routes, to mount at `/v1/keys` behind `authenticate`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Env } from "../_env.ts";
 * import { Metrics } from "../metrics.ts";
 * import { inFlightLimit } from "../middleware/in_flight.ts";
 * import type { KeyInfo, SignerClient } from "../../core/signer_client.ts";
 * declare const signer: SignerClient;
 * const app = new Hono<Env>();
 * app.route("/v1/keys", keyRoutes({ signer, metrics: new Metrics(), inFlight: inFlightLimit(256), maxBodyBytes: 65536 }));
 * ```
 */
export function keyRoutes(options: KeyRoutesOptions): Hono<Env> {
  const { signer, keys, metrics, inFlight, jwks } = options;
  return new Hono<Env>()
    .get("/", query(PageQuery), inFlight, async (c) => {
      const grant = grantOf(c);
      if (keys === undefined) {
        const all = await metrics.time("list", () => signer.listKeys());
        return c.json({ keys: all.filter((k) => mayUse(grant, k.id)).map(keyJson) });
      }
      const { limit, cursor } = c.req.valid("query");
      // A scoped token's page is taken among its own keys, so neither the page nor its cursor
      // names a key outside its scope. A name in the scope stands for its primary version.
      const ids = grant.keys === "*" ? undefined : await scopeIds(keys, grant.keys);
      const page = await metrics.time("list", () => keys.listPage({ limit, cursor, ids }));
      return c.json({ keys: page.keys.map(keyJson), ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}) });
    })
    .get("/:id", permittedKey(keys), query(KeyQuery), inFlight, async (c) => {
      const { id, ref } = c.req.valid("param");
      const { format } = c.req.valid("query");
      if (keys === undefined) {
        const key = await metrics.time("get", () => signer.getKey(id));
        return c.json(format === "jwk" ? publicJwk(key) : format === "pem" ? pemJson(key) : keyJson(key));
      }
      const key = await metrics.time("get", () => keys.describeKey(ref));
      return c.json(format === "jwk" ? publicJwk(key) : format === "pem" ? pemJson(key) : keyDetailsJson(key));
    })
    .post("/", fullScope("generating keys"), jsonBody(GenerateBody, options), inFlight, async (c) => {
      const { keySpec, jwks: publish, ...metadata } = c.req.valid("json");
      c.get("audit").keySpec = keySpec;
      if (metadata.name !== undefined) c.get("audit").keyName = metadata.name;
      const named = Object.keys(metadata).length > 0;
      if (named && keys === undefined) throw new KeycellError("bad_request", "this server keeps no key names nor metadata");
      if (publish) {
        if (jwks === undefined) throw new KeycellError("bad_request", "this server publishes no JWKS");
        await jwks.checkRoom();
      }
      const key = await metrics.time("generate", () => named ? keys!.generate(keySpec, metadata) : signer.generate(keySpec));
      c.get("audit").keyId = key.id;
      if (publish) {
        try {
          await metrics.time("jwks", () => jwks!.mark(key.id, true));
        } catch (err) {
          // All or nothing: a key asked for the JWKS but not in it is not left behind.
          await signer.deleteKey(key.id).catch(() => {});
          throw err;
        }
      }
      return c.json({ ...keyJson(key), ...(publish ? { jwks: true } : {}) }, 201);
    })
    .delete("/:id", fullScope("deleting keys"), permittedKey(keys), query(DeleteQuery), inFlight, async (c) => {
      const { id, ref } = c.req.valid("param");
      if (c.req.valid("query").immediately !== "true") {
        throw new KeycellError(
          "bad_request",
          "a key is deleted at once only with ?immediately=true; POST /v1/keys/{name}/schedule-deletion deletes it after a waiting period",
        );
      }
      try {
        await metrics.time("delete", () => keys === undefined ? signer.deleteKey(id) : keys.deleteKey(ref));
      } finally {
        jwks?.forget();
      }
      return c.body(null, 204);
    });
}

/** The key ids a scope lets a token list: its ids, and the primary version of each of its names that exists. */
async function scopeIds(keys: Pick<SealedKeys, "resolveKey">, scope: ReadonlySet<string>): Promise<Set<string>> {
  const ids = new Set<string>();
  for (const ref of scope) {
    if (KEY_ID_PATTERN.test(ref)) {
      ids.add(ref);
      continue;
    }
    try {
      ids.add(await keys.resolveKey(ref, "read"));
    } catch (err) {
      if (!(err instanceof KeycellError && err.code === "key_not_found")) throw err;
    }
  }
  return ids;
}

/** A key as `?format=pem` shows it: its public half as a PEM block instead of base64 DER. */
function pemJson(key: KeyInfo): { id: string; keySpec: string; name?: string; publicKeyPem: string } {
  const { publicKey: _, ...rest } = keyJson(key);
  return { ...rest, publicKeyPem: publicKeyPem(key.publicKey) };
}
